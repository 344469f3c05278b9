"""What a reviewer's answer means for an invoice: the labels a decision can have, what Bosun
proposed, and the payment an approved escalation makes (the payment saga, executed once).

`orchestration/review/answers.py` calls these through `review_workflows` in definitions.py, so the
engine never imports this package.
"""

from __future__ import annotations

from assets.invoices.payment_saga import payment_params, record_settled, saga_executor
from assets.invoices.workflow import EVENT_TYPES, WORKFLOW

__all__ = [
    "EVENT_TYPES",
    "LABELS",
    "WORKFLOW",
    "decided_label",
    "payments",
    "proposed_label",
    "record_settled",
    "rejected_label",
    "saga_executor",
]

# The decisions the local model learns; "escalate" and "no_result" are routes, not answers.
LABELS = ("approve", "reject", "hold")


def _first_label(record: dict) -> str | None:
    # The final decision when it is one (a guardrail may have made it "escalate"), else the
    # model's own proposal.
    for field in ("decision", "proposed"):
        if record.get(field) in LABELS:
            return record[field]
    return None


def proposed_label(proposal: dict) -> str | None:
    """What Bosun proposed in a review item: a plan awaiting approval proposes to pay."""
    if proposal.get("kind") == "saga_approval":
        return "approve"
    return _first_label(proposal)


def decided_label(decision: dict) -> str | None:
    """What Bosun decided, from the event's decision record in the audit log."""
    return _first_label(decision)


def rejected_label(proposed: str | None) -> str | None:
    """The right decision when a reviewer refuses a proposal without naming one: refusing
    to pay means reject; refusing a reject or hold must say what instead (--label)."""
    return "reject" if proposed == "approve" else None


def payments(item: dict) -> list[dict]:
    """Approving an escalated decision to pay: the payment saga's parameters, as a batch
    run plans them (the key is the event's, so its actions are idempotent with the batch's)."""
    proposal = item["proposal"]
    if proposal.get("kind") or proposed_label(proposal) != "approve" or "invoice" not in proposal:
        return []
    return [payment_params(item["idempotency_key"], proposal["invoice"], proposal.get("po_amount"))]
