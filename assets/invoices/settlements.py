"""Delayed outcome check: was each payment actually settled by its due date?

A payment scheduled today settles days or weeks later, so this cannot be checked with the
batch. The bank's settlement feed (`erp_settlements`) is read per due day: one partition
per day in Berlin, holding the payments due that day. A payment not yet due passes; one
overdue without a settlement, failed, returned, settled late or for another amount fails
the check with its key in the metadata. The daily schedule re-runs yesterday's due day;
rematerialising an older day re-reads the feed (a return reported later shows up then).
The verdicts and the asset are the engine's (orchestration/verification/daily_checks.py).
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from assets.invoices.erp import SETTLEMENT_STATUSES, ERPResource
from assets.invoices.workflow import WORKFLOW, erp_payments
from orchestration.core.workflows import asset_job
from orchestration.verification.daily_checks import DueDay, DueFeed, build_due_day_check, days

# Today's due day exists too (its payments pass as not yet due until it ends).
due_days = days("Europe/Berlin")
# A payment due on a day may settle until that day ends in Berlin.
FEED = DueFeed(ZoneInfo("Europe/Berlin"), SETTLEMENT_STATUSES, done="settled", at="settled_at")
PASSING, FAILING = FEED.passing, FEED.failing


def describe(payment: dict) -> dict:
    return {
        "payment_key": payment["idempotency_key"],
        "invoice_id": payment["invoice_id"],
        "due_on": payment["due_on"].isoformat(),
        "amount": str(payment["amount"]),
    }


def evaluate(erp: ERPResource, start, end, as_of: datetime) -> DueDay:
    """Verdicts for the live payments due in [start, end) (Berlin days) as of `as_of`."""
    due = erp.payments_due_between(start.date(), end.date())
    reports = erp.settlement_reports([p["idempotency_key"] for p in due], reported_by=as_of)
    return FEED.judge(due, reports, as_of, describe)


payment_settlements = build_due_day_check(
    *("payment_settlements", "payments_settled_by_due_date", WORKFLOW, due_days, "erp", evaluate, FEED),
    noun="payment",
    deps=[erp_payments],
    description="What became of the payments due on the day, from the bank's settlement feed.",
    check_description="Every payment due on the day was settled by the end of it (Berlin), for its amount; "
    "not yet due passes; overdue, failed, returned or late fails with the payment keys.",
)

settlement_job = asset_job(
    WORKFLOW,
    "payment_settlement_job",
    [payment_settlements],
    "Check the payments due on one day against the bank's settlement feed.",
)
