"""Great Expectations on the invoice workflow's data: the context each batch was decided
from, and the outcomes of its decisions. The suites are JSON files in `expectations/`;
the generic runner is `orchestration/verification/expectations.py`."""

from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.invoices.erp import ERPResource
from assets.invoices.workflow import EVENT_TYPES, PO_TOLERANCE, invoice_batches
from orchestration.action.batch import action_key
from orchestration.action.saga_log import SagaLog
from orchestration.verification import expectations, frames
from resources.database import BosunDatabase

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


_CONTEXT_KEY = dg.AssetKey("invoice_context")
_ACTIONS_KEY = dg.AssetKey("invoice_actions")


# Blocking: a batch whose context breaks its expectations is not decided on (its events stay
# received, nothing is lost, the check's metadata says which expectation and which values).
@dg.asset_check(
    asset=_CONTEXT_KEY,
    name="context_meets_expectations",
    blocking=True,
    partitions_def=invoice_batches,
    description="The batch's context frame meets the invoice_context expectation suite (Great Expectations).",
)
def context_meets_expectations(invoice_context: list[dict]) -> dg.AssetCheckResult:
    return expectations.check_result(
        context_frame(invoice_context), CONTEXT_SUITE, "context_meets_expectations", _CONTEXT_KEY
    )


@dg.asset_check(
    asset=_ACTIONS_KEY,
    name="outcomes_meet_expectations",
    blocking=True,
    partitions_def=invoice_batches,
    additional_ins={"invoice_decisions": dg.AssetIn("invoice_decisions")},
    description="The batch's outcome frame (decisions, end states, ERP payments) meets the "
    "invoice_outcomes expectation suite (Great Expectations).",
)
def outcomes_meet_expectations(
    context: dg.AssetCheckExecutionContext, invoice_decisions: list[dict], bosun_db: BosunDatabase, erp: ERPResource
) -> dg.AssetCheckResult:
    states = bosun_db.inbox().batch_statuses(context.partition_key, EVENT_TYPES)
    keys = [action_key(d["key"], "schedule_payment") for d in invoice_decisions]
    paid = {r["idempotency_key"]: r for r in erp.effects_for(keys, []) if r["live"]}
    sagas = set(SagaLog(bosun_db.resolved_url).load([d["key"] for d in invoice_decisions]))
    return expectations.check_result(
        outcomes_frame(invoice_decisions, states, paid, sagas),
        OUTCOMES_SUITE,
        "outcomes_meet_expectations",
        _ACTIONS_KEY,
    )


expectation_checks = [context_meets_expectations, outcomes_meet_expectations]
