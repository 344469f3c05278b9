"""The default local model as arrays: what a prediction needs, without scikit-learn.

Importing scikit-learn (and the SciPy it pulls in) costs every batch run about 1 s and 70 MiB
(benchmarks/daemon_path.py's run workers), to compute what for the default pipeline is a few
dot products: a DictVectorizer, a MaxAbsScaler and, per cross-validation fold, a logistic
regression with one sigmoid per class (CalibratedClassifierCV, method="sigmoid").

`compile_pipeline` turns such a fitted pipeline into those arrays when the model is saved, and
`LinearForm.predict_proba` is scikit-learn's arithmetic for it in numpy (the pipeline's
`predict_proba`: sklearn/calibration.py, `_CalibratedClassifier.predict_proba`, averaged over
the folds). tests/resources/test_local_model.py holds it to scikit-learn's answer. Any other
pipeline (a text model) has no linear form and is run by scikit-learn as before. ONNX would do
the same generally, but onnxruntime costs as much at import as what it would replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import numpy as np


class NotLinear(ValueError):
    """A record the linear form cannot vectorize as DictVectorizer would (None, lists, dicts):
    the caller runs the pipeline itself, which gives scikit-learn's answer or its error."""


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: the regression's rows (one per class, one in all for two
    classes), the class each row stands for, and that row's sigmoid p = 1 / (1 + exp(a*s + b))."""

    coef: np.ndarray  # (rows, features)
    intercept: np.ndarray  # (rows,)
    class_index: np.ndarray  # (rows,) column in `classes`
    a: np.ndarray  # (rows,)
    b: np.ndarray  # (rows,)


@dataclass(frozen=True)
class LinearForm:
    version: str  # the saved pipeline's version this form was compiled from
    classes: tuple[str, ...]
    features: tuple[str, ...]  # in DictVectorizer's column order
    separator: str
    scale: np.ndarray  # MaxAbsScaler's scale_, per feature
    folds: tuple[Fold, ...]

    def vectorize(self, records: list[dict]) -> np.ndarray:
        import numpy as np

        column = {name: i for i, name in enumerate(self.features)}
        x = np.zeros((len(records), len(self.features)))
        for row, record in enumerate(records):
            for key, value in record.items():
                if isinstance(value, str):
                    name, value = f"{key}{self.separator}{value}", 1.0
                elif isinstance(value, Number):
                    name = key
                else:
                    raise NotLinear(f"feature {key!r} is {type(value).__name__}")
                if name in column:  # a feature never seen in fitting has no weight
                    x[row, column[name]] += float(value)
        return x * (1.0 / self.scale)

    def predict_proba(self, records: list[dict]) -> np.ndarray:
        import numpy as np

        x = self.vectorize(records)
        n_classes = len(self.classes)
        mean = np.zeros((len(records), n_classes))
        for fold in self.folds:
            scores = x @ fold.coef.T + fold.intercept
            proba = np.zeros_like(mean)
            with np.errstate(over="ignore"):  # exp overflow is a probability of 0, as scipy's expit says
                sigmoid = 1.0 / (1.0 + np.exp(fold.a * scores + fold.b))
            for row, class_index in enumerate(fold.class_index):
                proba[:, class_index + (1 if n_classes == 2 else 0)] = sigmoid[:, row]
            if n_classes == 2:
                proba[:, 0] = 1.0 - proba[:, 1]
            else:
                total = proba.sum(axis=1)[:, np.newaxis]
                proba = np.divide(proba, total, out=np.full_like(proba, 1 / n_classes), where=total != 0)
            proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
            mean += proba
        return mean / len(self.folds)

    # ---- stored beside the pipeline: plain arrays, loaded without pickle ----------------

    def save(self, path: Path) -> None:
        import numpy as np

        arrays = {
            "version": np.array(self.version),
            "classes": np.array(self.classes),
            "features": np.array(self.features, dtype=str),
            "separator": np.array(self.separator),
            "scale": self.scale,
        }
        for i, fold in enumerate(self.folds):
            for field in ("coef", "intercept", "class_index", "a", "b"):
                arrays[f"fold{i}_{field}"] = getattr(fold, field)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(path)  # atomic: a run never reads a half-written form

    @classmethod
    def load(cls, path: Path) -> LinearForm:
        import numpy as np

        with np.load(path, allow_pickle=False) as stored:
            folds = []
            while f"fold{len(folds)}_coef" in stored:
                i = len(folds)
                folds.append(Fold(*(stored[f"fold{i}_{f}"] for f in ("coef", "intercept", "class_index", "a", "b"))))
            return cls(
                version=str(stored["version"]),
                classes=tuple(str(c) for c in stored["classes"]),
                features=tuple(str(f) for f in stored["features"]),
                separator=str(stored["separator"]),
                scale=stored["scale"],
                folds=tuple(folds),
            )


def compile_pipeline(pipeline, version: str) -> Optional[LinearForm]:
    """The linear form of a fitted DictVectorizer -> MaxAbsScaler -> CalibratedClassifierCV
    (LogisticRegression, sigmoid) pipeline; None for any other pipeline."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MaxAbsScaler

    steps = [step for _, step in getattr(pipeline, "steps", [])]
    if len(steps) != 3:
        return None
    vectorizer, scaler, calibrated = steps
    if not (
        isinstance(vectorizer, DictVectorizer)
        and isinstance(scaler, MaxAbsScaler)
        and isinstance(calibrated, CalibratedClassifierCV)
        and calibrated.method == "sigmoid"
        and all(isinstance(c.estimator, LogisticRegression) for c in calibrated.calibrated_classifiers_)
    ):
        return None
    classes = [str(c) for c in calibrated.classes_]
    folds = []
    try:
        for fold in calibrated.calibrated_classifiers_:
            position = {str(c): i for i, c in enumerate(fold.classes)}
            rows = [position[str(c)] for c in fold.estimator.classes_][: len(fold.calibrators)]
            folds.append(
                Fold(
                    coef=np.asarray(fold.estimator.coef_, dtype=float),
                    intercept=np.asarray(fold.estimator.intercept_, dtype=float),
                    class_index=np.asarray(rows, dtype=np.int64),
                    a=np.array([c.a_ for c in fold.calibrators], dtype=float),
                    b=np.array([c.b_ for c in fold.calibrators], dtype=float),
                )
            )
    except AttributeError:
        # A scikit-learn whose fitted calibration is laid out otherwise (these are its private
        # attributes): the model is run by scikit-learn, as any pipeline without a form.
        return None
    return LinearForm(
        version=version,
        classes=tuple(classes),
        features=tuple(str(f) for f in vectorizer.feature_names_),
        separator=vectorizer.separator,
        scale=np.asarray(scaler.scale_, dtype=float),
        folds=tuple(folds),
    )
