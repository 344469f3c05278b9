"""The invoice decisions' report (the engine's asset, orchestration/verification/decision_report.py), with
the invoice dimensions failed decisions are grouped by: vendor and amount band."""

from assets.invoices.feedback import feedback_loop
from assets.invoices.workflow import EVENT_TYPES, WORKFLOW
from orchestration.verification.decision_report import build_decision_report_asset

AMOUNT_BANDS = ((1_000, "< 1k"), (10_000, "1k-10k"), (50_000, "10k-50k"))


def amount_band(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return next((name for limit, name in AMOUNT_BANDS if amount < limit), ">= 50k")


invoice_decision_report = build_decision_report_asset(
    "invoice_decision_report",
    workflow=WORKFLOW,
    event_types=EVENT_TYPES,
    labels=feedback_loop.labels,
    decisions="invoice_decisions",
    dimensions={
        "vendor": lambda record: (record.get("context_used") or {}).get("vendor_id") or "unknown",
        "amount_band": lambda record: amount_band((record.get("facts") or {}).get("amount")),
    },
)
