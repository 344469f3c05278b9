"""Great Expectations on the invoice workflow's data: the context each batch was decided
from, and the outcomes of its decisions. The suites are JSON files in `expectations/`;
the generic runner is `orchestration/verification/expectations.py`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from assets.invoices.erp import ERPResource
from assets.invoices.workflow import EVENT_TYPES, PO_TOLERANCE, invoice_batches
from orchestration.action.batch import action_key
from orchestration.verification import expectations, frames

if TYPE_CHECKING:  # the frames are made in orchestration/verification/frames.py, which imports pandas when used
    import pandas as pd

SUITES = Path(__file__).parent / "expectations"
CONTEXT_SUITE = SUITES / "invoice_context.json"
OUTCOMES_SUITE = SUITES / "invoice_outcomes.json"
INVOICE_COLUMNS = ("invoice_id", "vendor_id", "po_number", "amount", "currency")
PAYMENT_COLUMNS = ("currency", "paid_amount", "paid_currency", "po_limit", "paid_without_approval")


def _invoice(r: dict) -> dict:
    inv = r["invoice"]
    return {
        **{k: inv.get(k) for k in ("invoice_id", "vendor_id", "po_number")},
        "amount": float(inv["amount"]) if inv.get("amount") is not None else None,
        "currency": inv.get("currency"),
    }


def context_frame(records: list[dict]) -> pd.DataFrame:
    """One row per event of the batch: ids, amount, currency, and the context's quality."""
    return frames.context_frame(records, _invoice, INVOICE_COLUMNS)


def outcomes_frame(
    decisions: list[dict], states: dict[str, str], paid: dict[str, dict], sagas: set[str] = frozenset()
) -> pd.DataFrame:
    """One row per decision of the run: what was decided, how sure, where the event ended,
    and what the ERP pays for it now (paid: payment key -> live payment row; sagas: events
    with a payment saga in the log)."""

    def payment(d: dict, acted_on: str) -> dict:
        pay = paid.get(action_key(d["key"], "schedule_payment"))
        po_amount = d["context_used"].get("po_amount")
        return {
            "currency": d["invoice"].get("currency"),
            "paid_amount": float(pay["amount"]) if pay else 0.0,
            "paid_currency": pay["currency"] if pay else None,
            # No purchase order: nothing may be paid at all.
            "po_limit": float(Decimal(str(po_amount)) * (1 + PO_TOLERANCE)) if po_amount else 0.0,
            "paid_without_approval": bool(pay) and acted_on != "approve",
        }

    return frames.outcome_frame(decisions, states, "approve", payment, PAYMENT_COLUMNS, sagas)


def _paid(erp: ERPResource, decisions: list[dict]) -> dict[str, dict]:
    """The ERP's live payments for the decisions, by payment key."""
    keys = [action_key(d["key"], "schedule_payment") for d in decisions]
    return {r["idempotency_key"]: r for r in erp.effects_for(keys, []) if r["live"]}


suites = expectations.BatchSuites(
    CONTEXT_SUITE,
    context_frame,
    OUTCOMES_SUITE,
    lambda decisions, states, sagas, r: outcomes_frame(decisions, states, _paid(r["erp"], decisions), sagas),
    resource_keys={"erp"},
    effects="ERP payments",
)
expectation_checks = expectations.build_expectation_checks("invoice", EVENT_TYPES, invoice_batches, suites)
context_meets_expectations, outcomes_meet_expectations = expectation_checks
