"""The local model: a scikit-learn classifier with calibrated probabilities.

It needs no network and no key, which makes it the embedded default and the cheap first
stop of the router. Features arrive as dicts (the workflow decides which), so one resource
serves every workflow; a fitted model is kept per name under the model directory, the default
pipeline also as its linear form (linear_form.py), which is what a batch run predicts with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dagster as dg

if TYPE_CHECKING:
    import numpy as np

from orchestration.core import settings
from resources.env import resolved
from resources.linear_form import LinearForm, NotLinear, compile_pipeline


@dataclass(frozen=True)
class Predictions:
    labels: list[str]
    probabilities: np.ndarray  # rows: items, columns: classes
    classes: list[str]
    model_version: str

    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


class LocalModel(dg.ConfigurableResource):
    """`model_dir` unset means BOSUN_MODEL_DIR, else BOSUN_HOME/models."""

    model_dir: Optional[str] = None

    def _path(self, name: str) -> Path:
        configured = resolved(self.model_dir)
        base = Path(configured) if configured else settings.model_dir()
        return base / f"{name}.joblib"

    def artifact_path(self, name: str, suffix: str = ".pkl") -> Path:
        """Where a companion artifact of a model lives (e.g. its confidence calibrator)."""
        return self._path(name).with_suffix(suffix)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def fit(self, name: str, records: list[dict], labels: list[str], seed: int = 0, pipeline=None) -> str:
        """Fit and save; returns the model version (hash of the saved file). `pipeline`, an
        unfitted scikit-learn pipeline that takes the records as they are (e.g.
        orchestration/decision/text_model.py for free text), replaces the default."""
        # scikit-learn (and SciPy under it) is ~1-2 s and ~100 MB at import: only fitting
        # needs it here, and loading a saved model imports what the pickle names. The code
        # server, the daemon's sensors and the plain CLI commands never pay for it. joblib
        # likewise: it imports numpy whenever numpy is installed.
        import joblib
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import MaxAbsScaler

        # Sigmoid calibration with cross-validation: the probabilities are what the
        # escalation threshold is compared against, so they must mean what they say.
        pipeline = (
            pipeline
            if pipeline is not None
            else make_pipeline(
                DictVectorizer(sparse=True),
                MaxAbsScaler(),
                CalibratedClassifierCV(
                    LogisticRegression(max_iter=2000, C=3.0, random_state=seed), cv=5, method="sigmoid"
                ),
            )
        )
        pipeline.fit(records, labels)
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump(pipeline, tmp)
        version = _file_version(tmp)
        # The linear form first: until the pipeline is replaced it names another version and
        # is not used (predict checks), so a crash between the two leaves no mismatched pair.
        form = compile_pipeline(pipeline, version)
        if form is not None:
            form.save(_linear_path(path))
        else:
            _linear_path(path).unlink(missing_ok=True)
        tmp.replace(path)  # atomic: a run never loads a half-written model
        _load.cache_clear()
        _load_linear.cache_clear()
        return version

    def version(self, name: str) -> str | None:
        path = self._path(name)
        return _file_version(path) if path.exists() else None

    def promote(self, candidate: str, name: str) -> str:
        """Make a fitted candidate the model `name` that decisions load; the replaced file is
        kept as `name@VERSION` so a promotion can be undone by promoting that back."""
        source, target = self._path(candidate), self._path(name)
        if not source.exists():
            raise FileNotFoundError(f"no candidate model {candidate!r} at {source}")
        if target.exists():
            keep = target.with_name(f"{name}@{_file_version(target)}.joblib")
            if not keep.exists():
                keep.write_bytes(target.read_bytes())
            _copy_if_exists(_linear_path(target), _linear_path(keep))
        # The linear form names the version it was compiled from: copied before the model,
        # it is not used until the model it belongs to is in place.
        _copy_if_exists(_linear_path(source), _linear_path(target))
        _copy_if_exists(source, target)
        _load.cache_clear()
        _load_linear.cache_clear()
        return _file_version(target)

    def predict(self, name: str, records: list[dict]) -> Predictions:
        path = self._path(name)
        if not path.exists():
            raise FileNotFoundError(f"no local model {name!r} at {path}; train it first (bosun train or bosun demo)")
        mtime = path.stat().st_mtime_ns
        form = _load_linear(str(path), mtime)
        if form is not None:
            try:
                return _predictions(form.predict_proba(records), list(form.classes), form.version)
            except NotLinear:
                pass  # the pipeline itself gives scikit-learn's answer, or its error
        pipeline, version = _load(str(path), mtime)
        classes = [str(c) for c in pipeline.classes_]
        if not records:  # scikit-learn refuses an empty batch
            import numpy as np

            return _predictions(np.zeros((0, len(classes))), classes, version)
        return _predictions(pipeline.predict_proba(records), classes, version)


def _predictions(proba: np.ndarray, classes: list[str], version: str) -> Predictions:
    return Predictions([classes[i] for i in proba.argmax(axis=1)], proba, classes, version)


def _linear_path(model: Path) -> Path:
    return model.with_name(model.name.removesuffix(".joblib") + ".linear.npz")


def _copy_if_exists(source: Path, target: Path) -> None:
    """`target` becomes a copy of `source` atomically (a run never loads half a file), or is
    removed when there is no `source`."""
    if not source.exists():
        target.unlink(missing_ok=True)
        return
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(source.read_bytes())
    tmp.replace(target)


def _file_version(path: Path) -> str:
    return "local-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# Loaded once per process and file version, not once per batch.
import functools  # noqa: E402


@functools.lru_cache(maxsize=8)
def _load_linear(path: str, _mtime_ns: int) -> Optional[LinearForm]:
    """The model's linear form if it has one compiled from this very file, else None."""
    linear = _linear_path(Path(path))
    if not linear.exists():
        return None
    form = LinearForm.load(linear)
    return form if form.version == _file_version(Path(path)) else None


@functools.lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int):
    import joblib  # imported when used: it imports numpy, which the code location loads without

    return joblib.load(path), _file_version(Path(path))
