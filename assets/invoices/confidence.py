"""Confidence of the invoice decisions: which factors count, and how much.

The mechanics (combining, calibrating, thresholds) are generic, in
orchestration/decision/confidence.py; this module only says what lowers confidence for an invoice.
"""

from __future__ import annotations

from orchestration.decision.confidence import Factor, quality_factors

# A top BM25 score below this means the policy documents barely speak to the case.
MIN_RETRIEVAL_SCORE = 1.0
RETRIEVAL_WEIGHT = 0.2
KNOWLEDGE_GAP_PENALTY = 0.2
DISAGREEMENT_PENALTY = 0.3


def retrieval_factor(passages: list[dict] | None) -> Factor:
    if not passages:
        return Factor("knowledge_gap", KNOWLEDGE_GAP_PENALTY, "no policy passage retrieved")
    top = max(p["score"] for p in passages)
    penalty = RETRIEVAL_WEIGHT * max(0.0, 1.0 - top / MIN_RETRIEVAL_SCORE)
    return Factor("weak_retrieval", penalty, f"top policy passage score {top:.2f}")


def factors(p: dict) -> list[Factor]:
    """Every multiplier on one proposal's probability, in the order they are shown."""
    out: list[Factor] = []
    g = p["guardrails"]
    if g["flagged_by"]:
        out.append(Factor("soft_guardrails", 1.0 - g["confidence_factor"], ", ".join(g["flagged_by"])))
    out += quality_factors(p.get("quality_factors", []))
    out.append(retrieval_factor(p["context_used"].get("policy_passages")))
    if p["model"] != "local" and p["decision"] != "no_result":
        local = p["local"]["decision"]
        if local != p["decision"]:
            out.append(Factor("models_disagree", DISAGREEMENT_PENALTY, f"local {local}, LLM {p['decision']}"))
    return out


def broader_query(p: dict) -> str:
    """The re-retrieval's query: every fact the case raises, plus what was invoiced."""
    f = p["facts"]
    words = ["invoice approval payment policy purchase order vendor"]
    words += [k.replace("_", " ") for k, v in f.items() if isinstance(v, bool) and v]
    words += [li.get("description", "") for li in p["invoice"].get("line_items", [])]
    return " ".join(words)
