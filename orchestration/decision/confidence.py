"""Confidence that means what it says: factors, a fitted calibrator, thresholds.

1. `combine`: the model's (calibrated) probability times one multiplier per factor (soft-guardrail
   hits, context quality such as missing or stale sources, knowledge-retrieval strength,
   disagreement between models). Every factor is kept in a breakdown stored on the
   decision, so "why was this escalated" has an answer.
2. `Calibrator`: isotonic regression from each model's stated probability to its
   observed rate of correct decisions, fitted on reviewed outcomes. The factors of (1)
   apply *after* calibration: they are risk and policy judgements a history of right
   answers must not erase (a soft guardrail still asks for a second look). Its version is
   recorded on every decision; without a fitted calibrator probabilities are used as is.
3. `Thresholds`: act at or above `act`; between `ask` and `act` read more context and ask
   the model again (orchestration/decision/loop.py, bounded per workflow); below, escalate.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Factor:
    name: str
    penalty: float  # confidence is multiplied by (1 - penalty)
    detail: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "penalty": round(self.penalty, 4), "detail": self.detail}


def quality_factors(records: list[dict]) -> list[Factor]:
    """The context layer's contract: [{"name", "penalty" in [0, 1], "detail"}], clipped."""
    return [Factor(str(q["name"]), min(1.0, max(0.0, float(q["penalty"]))), str(q.get("detail", ""))) for q in records]


def retrieval_factor(passages: Optional[list[dict]], min_score: float, weight: float, gap_penalty: float) -> Factor:
    """How well the knowledge speaks to the case: no passage at all is a gap (`gap_penalty`);
    a top score below `min_score` costs up to `weight`, the further below the more."""
    if not passages:
        return Factor("knowledge_gap", gap_penalty, "no policy passage retrieved")
    top = max(p["score"] for p in passages)
    penalty = weight * max(0.0, 1.0 - top / min_score)
    return Factor("weak_retrieval", penalty, f"top policy passage score {top:.2f}")


def disagreement_factor(p: dict, penalty: float) -> Optional[Factor]:
    """An LLM's answer the local model, asked first (`p["local"]`), did not give."""
    if p["model"] == "local" or p["decision"] == "no_result":
        return None
    local = p["local"]["decision"]
    if local == p["decision"]:
        return None
    return Factor("models_disagree", penalty, f"local {local}, LLM {p['decision']}")


def combine(probability: float, factors: list[Factor]) -> tuple[float, list[dict]]:
    confidence = float(probability)
    breakdown = [{"name": "model_probability", "value": round(confidence, 4)}]
    for f in factors:
        if f.penalty <= 0:
            continue
        confidence *= 1.0 - f.penalty
        breakdown.append(f.as_dict())
    return max(0.0, min(1.0, confidence)), breakdown


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """ECE with equal-width bins: the gap between stated confidence and hit rate,
    weighted by how many decisions fall in each bin."""
    # imported when used: the code location loads without numpy (code server RSS, run start)
    import numpy as np

    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.size == 0:
        return 0.0
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / conf.size * abs(conf[m].mean() - hit[m].mean())
    return float(total)


@dataclass(frozen=True)
class IsotonicMap:
    """A fitted isotonic regression as its thresholds: clipped to their range, then linear
    between them, as scikit-learn's `IsotonicRegression(out_of_bounds="clip").predict` is.
    Kept as numbers so that applying a calibrator in a batch run never imports scikit-learn
    (seconds and ~70 MiB per run process); it is imported to fit one."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    @classmethod
    def of(cls, fitted) -> "IsotonicMap":
        return cls(tuple(map(float, fitted.X_thresholds_)), tuple(map(float, fitted.y_thresholds_)))

    def predict(self, values) -> np.ndarray:
        import numpy as np

        return np.interp(np.clip(np.asarray(values, dtype=float), self.x[0], self.x[-1]), self.x, self.y)


class Calibrator:
    """One isotonic map per model group (e.g. "local", "llm"): each model's stated
    probability becomes its observed rate of being right. A group never fitted is used
    as is."""

    def __init__(
        self,
        models: Optional[dict[str, IsotonicMap]] = None,
        version: str = "uncalibrated",
        report: Optional[dict] = None,
    ):
        # Calibrators saved before IsotonicMap hold scikit-learn's objects: read their thresholds.
        models = {g: m if isinstance(m, IsotonicMap) else IsotonicMap.of(m) for g, m in (models or {}).items()}
        self.models, self.version, self.report = models, version, report or {}

    @classmethod
    def fit(cls, confidence, correct, groups, min_examples: int = 20) -> "Calibrator":
        import numpy as np

        conf = np.asarray(confidence, dtype=float)
        hit = np.asarray(correct, dtype=float)
        grp = np.asarray(groups)
        from sklearn.isotonic import IsotonicRegression

        models = {}
        for g in sorted(set(grp.tolist())):
            m = grp == g
            if m.sum() < min_examples:
                continue  # too few outcomes to say anything; left uncalibrated
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
            models[g] = IsotonicMap.of(iso.fit(conf[m], hit[m]))
        thresholds = sorted((g, list(m.x), list(m.y)) for g, m in models.items())
        return cls(models, f"isotonic-{hashlib.sha256(pickle.dumps(thresholds)).hexdigest()[:12]}")

    def apply(self, confidence, groups) -> np.ndarray:
        import numpy as np

        conf = np.asarray(confidence, dtype=float).copy()
        grp = np.asarray(groups)
        for g, model in self.models.items():
            m = grp == g
            if m.any():
                conf[m] = model.predict(conf[m])
        return conf

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump({"models": self.models, "version": self.version, "report": self.report}, fh)
        tmp.replace(path)  # atomic: a run never reads a half-written calibrator

    @classmethod
    def load(cls, path: Path) -> "Calibrator":
        if not path.exists():
            return cls()
        with open(path, "rb") as fh:
            d = pickle.load(fh)
        return cls(d["models"], d["version"], d.get("report"))


def fit_and_report(confidence, correct, groups, seed: int = 0) -> Calibrator:
    """Fit on half, measure ECE on the other half (honest figures), then refit on all."""
    import numpy as np

    conf, hit, grp = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float), np.asarray(groups)
    order = np.random.default_rng(seed).permutation(conf.size)
    fit_idx, test_idx = order[: conf.size // 2], order[conf.size // 2 :]
    held = Calibrator.fit(conf[fit_idx], hit[fit_idx], grp[fit_idx])
    report = {
        "examples": int(conf.size),
        "accuracy": round(float(hit.mean()), 4) if conf.size else None,
        "by_group": {g: int((grp == g).sum()) for g in sorted(set(grp.tolist()))},
        "ece_before": round(expected_calibration_error(conf[test_idx], hit[test_idx]), 4),
        "ece_after": round(expected_calibration_error(held.apply(conf[test_idx], grp[test_idx]), hit[test_idx]), 4),
    }
    final = Calibrator.fit(conf, hit, grp)
    final.report = report
    return final


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    act: float = Field(gt=0, le=1)
    ask: float = Field(ge=0, le=1)  # between ask and act: more context, then the model again

    @model_validator(mode="after")
    def _ordered(self):
        if self.ask > self.act:
            raise ValueError("ask threshold must not exceed act threshold")
        return self

    def route(self, confidence: float) -> str:
        if confidence >= self.act:
            return "act"
        return "ask" if confidence >= self.ask else "escalate"
