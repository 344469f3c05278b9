"""Daily reconciliation: the ledger entries posted on a day against the payments scheduled that day."""

from collections import defaultdict
from datetime import timezone
from decimal import Decimal

import dagster as dg
import sqlalchemy as sa

from assets.invoices.erp import ERPResource, ledger_entries, payments
from assets.invoices.workflow import WORKFLOW, erp_payments
from orchestration.core.workflows import asset_job
from orchestration.verification.daily_checks import DayResult, build_daily_check, days

# Days in the accounts-payable team's time zone, the one the schedule names; today is a
# partition too, so today's payments can be reconciled before the day closes.
reconciliation_days = days("Europe/Berlin")


def _live(erp: ERPResource, table, stamp, live: str, start, end) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    # The ERP stamps in UTC, and SQLite compares the stored text: a Berlin day's bounds compared
    # as Berlin wall time would give the hour after midnight to the day before.
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    q = sa.select(table.c.invoice_id, table.c.amount).where(table.c.status == live, stamp >= start, stamp < end)
    with erp.engine.connect() as conn:
        for invoice_id, amount in conn.execute(q):
            totals[invoice_id] += Decimal(str(amount))
    return totals


def reconcile(erp: ERPResource, start, end, as_of=None) -> DayResult:
    """The day's ledger entries against its scheduled payments, per invoice."""
    ledger = _live(erp, ledger_entries, ledger_entries.c.posted_at, "posted", start, end)
    paid = _live(erp, payments, payments.c.scheduled_at, "scheduled", start, end)
    mismatches = [
        {"invoice_id": i, "ledger": str(ledger.get(i)), "payments": str(paid.get(i))}
        for i in sorted(set(ledger) | set(paid))
        if ledger.get(i) != paid.get(i)
    ]
    figures = {
        "ledger_entries": len(ledger),
        "payments": len(paid),
        "ledger_total": str(sum(ledger.values(), Decimal(0))),
        "payments_total": str(sum(paid.values(), Decimal(0))),
        "mismatches": len(mismatches),
    }
    found = {"mismatches": len(mismatches), "examples": dg.MetadataValue.json(mismatches[:10])}
    return DayResult(figures, len(ledger) + len(paid), not mismatches, found)


payment_reconciliation = build_daily_check(
    *("payment_reconciliation", "ledger_matches_payments", WORKFLOW, reconciliation_days, "erp", reconcile),
    deps=[erp_payments],
    description="The day's ledger entries against its scheduled payments, per invoice.",
    check_description="Every invoice posted on the day is paid that day, same amount.",
    no_data="no ledger entries and no payments",
    no_data_figures=("ledger_entries", "payments"),
)

reconciliation_job = asset_job(
    WORKFLOW,
    "payment_reconciliation_job",
    [payment_reconciliation],
    "Reconcile one day's ledger entries against its payments.",
)
