"""How good a model is on labelled examples, and whether a retrained one may replace it.

The held-out split is a hash of each example's subject, not a random draw: an event stays
on the same side across retrains, so a later model is never judged on what it learnt from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from orchestration.decision.confidence import expected_calibration_error


def is_held_out(subject: str, fraction: float) -> bool:
    """Stable: the same subject answers the same for every call, process and retrain."""
    digest = hashlib.sha256(subject.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def score(truth, predicted, confidence) -> dict:
    """Accuracy, ECE (stated confidence against the hit rate) and the Brier score of the
    stated confidence (mean squared gap to 1 when right, 0 when wrong) of one model's answers."""
    # imported when used: the code location loads without numpy (code server RSS, run start)
    import numpy as np

    hit = np.asarray([t == p for t, p in zip(truth, predicted)], dtype=float)
    if hit.size == 0:
        return {"examples": 0, "accuracy": None, "ece": None, "brier": None}
    conf = np.asarray(confidence, dtype=float)
    return {
        "examples": int(hit.size),
        "accuracy": round(float(hit.mean()), 4),
        "ece": round(expected_calibration_error(conf, hit), 4),
        "brier": round(float(np.mean((conf - hit) ** 2)), 4),
    }


@dataclass(frozen=True)
class PromotionRule:
    """A retrained model replaces the current one only if it is not worse on held-out
    examples: accuracy may not drop by more than `max_accuracy_drop`, the Brier score may
    not rise by more than `max_brier_rise`, and there must be `min_held_out` examples.

    Brier rather than ECE: ECE alone would refuse a model that is right more often but
    states too little confidence, which the calibrator refitted right after corrects; the
    Brier score charges for both wrong answers and miscalibration. ECE is reported beside it.
    """

    max_accuracy_drop: float = 0.0
    max_brier_rise: float = 0.0
    min_held_out: int = 20

    def verdict(self, before: dict, after: dict) -> tuple[bool, list[str]]:
        """(passed, reasons it did not) for two `score` results on the same examples."""
        if after["examples"] < self.min_held_out:
            return False, [f"only {after['examples']} held-out examples; need {self.min_held_out}"]
        if before["examples"] == 0 or before["accuracy"] is None:
            return True, []  # nothing to compare against: the first model
        reasons = []
        if after["accuracy"] < before["accuracy"] - self.max_accuracy_drop:
            reasons.append(f"accuracy {after['accuracy']} < {before['accuracy']} - {self.max_accuracy_drop}")
        if after["brier"] > before["brier"] + self.max_brier_rise:
            reasons.append(f"Brier score {after['brier']} > {before['brier']} + {self.max_brier_rise}")
        return not reasons, reasons
