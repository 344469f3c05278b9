"""The local model: a scikit-learn classifier with calibrated probabilities.

It needs no network and no key, which makes it the embedded default and the cheap first
stop of the router. Features arrive as dicts (the workflow decides which), so one resource
serves every workflow; a fitted model is kept per name under the model directory.
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
        tmp.replace(path)  # atomic: a run never loads a half-written model
        _load.cache_clear()
        return _file_version(path)

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
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(source.read_bytes())
        tmp.replace(target)  # atomic, as in fit
        _load.cache_clear()
        return _file_version(target)

    def predict(self, name: str, records: list[dict]) -> Predictions:
        path = self._path(name)
        if not path.exists():
            raise FileNotFoundError(f"no local model {name!r} at {path}; train it first (bosun train or bosun demo)")
        pipeline, version = _load(str(path), path.stat().st_mtime_ns)
        classes = [str(c) for c in pipeline.classes_]
        if not records:
            # imported when used: the code location loads without numpy (code server RSS, run start)
            import numpy as np

            return Predictions([], np.zeros((0, len(classes))), classes, version)
        proba = pipeline.predict_proba(records)
        labels = [classes[i] for i in proba.argmax(axis=1)]
        return Predictions(labels, proba, classes, version)


def _file_version(path: Path) -> str:
    return "local-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# Loaded once per process and file version, not once per batch.
import functools  # noqa: E402


@functools.lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int):
    import joblib  # imported when used: it imports numpy, which the code location loads without

    return joblib.load(path), _file_version(Path(path))
