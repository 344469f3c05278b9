"""Daily reconciliation: the ledger entries posted on a day against the payments scheduled that day."""

from collections import defaultdict
from decimal import Decimal

import dagster as dg
import sqlalchemy as sa

from assets.invoices.erp import ERPResource, ledger_entries, payments
from assets.invoices.workflow import WORKFLOW, erp_payments
from orchestration.core.lineage import layer_group

# Days in the accounts-payable team's time zone, the one the schedule names. `end_offset=1`:
# today is a partition too, so today's payments can be reconciled before the day closes.
reconciliation_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="Europe/Berlin", end_offset=1)


def _live(erp: ERPResource, table, stamp, live: str, start, end) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    q = sa.select(table.c.invoice_id, table.c.amount).where(table.c.status == live, stamp >= start, stamp < end)
    with erp.engine.connect() as conn:
        for invoice_id, amount in conn.execute(q):
            totals[invoice_id] += Decimal(str(amount))
    return totals


def reconcile(erp: ERPResource, start, end) -> dict:
    ledger = _live(erp, ledger_entries, ledger_entries.c.posted_at, "posted", start, end)
    paid = _live(erp, payments, payments.c.scheduled_at, "scheduled", start, end)
    mismatches = [
        {"invoice_id": i, "ledger": str(ledger.get(i)), "payments": str(paid.get(i))}
        for i in sorted(set(ledger) | set(paid))
        if ledger.get(i) != paid.get(i)
    ]
    return {
        "ledger_entries": len(ledger),
        "payments": len(paid),
        "ledger_total": str(sum(ledger.values(), Decimal(0))),
        "payments_total": str(sum(paid.values(), Decimal(0))),
        "mismatches": mismatches,
    }


@dg.asset(
    partitions_def=reconciliation_days,
    group_name=layer_group(WORKFLOW, "verification"),
    deps=[erp_payments],
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(
            "ledger_matches_payments",
            asset="payment_reconciliation",
            partitions_def=reconciliation_days,
            description="Every invoice posted on the day is paid that day, same amount.",
        )
    ],
)
def payment_reconciliation(context: dg.AssetExecutionContext, erp: ERPResource):
    """The day's ledger entries against its scheduled payments, per invoice."""
    window = context.partition_time_window
    result = reconcile(erp, window.start, window.end)
    yield dg.MaterializeResult(
        metadata={
            "day": context.partition_key,
            "ledger_entries": result["ledger_entries"],
            "payments": result["payments"],
            "ledger_total": result["ledger_total"],
            "payments_total": result["payments_total"],
            "mismatches": len(result["mismatches"]),
        }
    )
    if not result["ledger_entries"] and not result["payments"]:
        # Nothing posted and nothing paid proves nothing: say so instead of passing.
        yield dg.AssetCheckResult(
            check_name="ledger_matches_payments",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"no data: no ledger entries and no payments on {context.partition_key}",
            metadata={"ledger_entries": 0, "payments": 0},
        )
        return
    yield dg.AssetCheckResult(
        check_name="ledger_matches_payments",
        passed=not result["mismatches"],
        metadata={
            "mismatches": len(result["mismatches"]),
            "examples": dg.MetadataValue.json(result["mismatches"][:10]),
        },
    )


reconciliation_job = dg.define_asset_job(
    "payment_reconciliation_job",
    selection=dg.AssetSelection.assets(payment_reconciliation),
    executor_def=dg.in_process_executor,
    tags={"bosun/workflow": "invoices"},
    description="Reconcile one day's ledger entries against its payments.",
)
