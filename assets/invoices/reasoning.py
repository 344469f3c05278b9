"""Proposals for a batch of invoices: the engine's reasoner (orchestration/decision/reasoner.py)
with the invoice's model features, decision kinds, prompt and the amount an answer states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from assets.invoices.context import model_features
from assets.invoices.workflow import MODEL_NAME, ROUTING, WORKFLOW
from orchestration.decision import reasoner
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.prompts import Prompt
from orchestration.decision.routing import RoutingPolicy

PROMPT_PATH = Path(__file__).parent / "prompts" / "decide_invoice.yaml"
# Every kind `decision_type` answers (the routing rules and a replay's routing name them).
DECISION_KINDS = ("standard", "large_amount", "quarantined_text")


def decision_type(facts: dict) -> str:
    """What kind of decision this is, for the routing rules in workflow.ROUTING."""
    if facts["injection_suspected"]:
        return "quarantined_text"
    if facts["amount"] > 50_000:
        return "large_amount"
    return "standard"


def _context_used(c: dict) -> dict:
    po = c["purchase_order"] or {}
    return {
        "vendor_id": c["invoice"]["vendor_id"],
        "vendor_known": c["vendor"] is not None,
        "po_number": c["invoice"]["po_number"],
        "po_amount": po.get("amount"),
        "prior_payments": c["prior_payments"],
        "pii_redacted": c["pii_found"],
        **reasoner.context_provenance(c),
    }


SPEC = reasoner.ReasonerSpec(
    workflow=WORKFLOW,
    model_name=MODEL_NAME,
    routing=ROUTING,
    prompt_path=PROMPT_PATH,
    features=lambda c: model_features(c["facts"]),
    decision_type=decision_type,
    carry=lambda c: {
        "context_used": _context_used(c),
        "facts": c["facts"],
        "invoice": c["invoice"],
        "stated_amount": None,
    },
    prompt_values=lambda c: {"invoice": json.dumps(c["invoice"], sort_keys=True, default=str)},
    # A refused answer, told the way an accounts-payable lead would say it, asking for the amount.
    statement=lambda feedback: reasoner.rule_statement(
        feedback, "invoice", "approval policy", "stating the invoice's amount"
    ),
    answer_fields=lambda value: {"stated_amount": value.get("amount")},
)


class Reasoner(reasoner.Reasoner):
    def __init__(self, local_model, llm, ledger=None, routing=None, prompt=None):
        super().__init__(SPEC, local_model, llm, ledger, routing, prompt)


def propose(
    contexts: list[dict],
    local_model,
    llm,
    ledger: Optional[LLMLedger] = None,
    routing: Optional[RoutingPolicy] = None,
    prompt: Optional[Prompt] = None,
) -> tuple[list[dict], dict]:
    """One first-pass proposal per context, and the batch's routing figures (no loop: the
    calibration and the tests of the router read what a model says, before any rule)."""
    r = Reasoner(local_model, llm, ledger, routing, prompt)
    return r.propose(contexts), r.figures()
