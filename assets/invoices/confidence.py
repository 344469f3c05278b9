"""Confidence of the invoice decisions: which factors count, and how much.

The mechanics (combining, calibrating, thresholds) are generic, in
orchestration/decision/confidence.py; this module only says what lowers confidence for an invoice.
"""

from __future__ import annotations

from orchestration.decision import confidence
from orchestration.decision.batch import default_factors
from orchestration.decision.confidence import Factor

# A top BM25 score below this means the policy documents barely speak to the case.
MIN_RETRIEVAL_SCORE = 1.0
RETRIEVAL_WEIGHT = 0.2
KNOWLEDGE_GAP_PENALTY = 0.2
DISAGREEMENT_PENALTY = 0.3


def retrieval_factor(passages: list[dict] | None) -> Factor:
    return confidence.retrieval_factor(passages, MIN_RETRIEVAL_SCORE, RETRIEVAL_WEIGHT, KNOWLEDGE_GAP_PENALTY)


def factors(p: dict) -> list[Factor]:
    """Every multiplier on one proposal's probability, in the order they are shown: the
    engine's (soft guardrails, the context's quality factors), retrieval strength, and the
    models' disagreement."""
    out = [*default_factors(p), retrieval_factor(p["context_used"].get("policy_passages"))]
    disagree = confidence.disagreement_factor(p, DISAGREEMENT_PENALTY)
    return out if disagree is None else [*out, disagree]


def broader_query(p: dict) -> str:
    """The re-retrieval's query: every fact the case raises, plus what was invoiced."""
    f = p["facts"]
    words = ["invoice approval payment policy purchase order vendor"]
    words += [k.replace("_", " ") for k, v in f.items() if isinstance(v, bool) and v]
    words += [li.get("description", "") for li in p["invoice"].get("line_items", [])]
    return " ".join(words)
