"""Delayed outcome check: was each payment actually settled by its due date?

A payment scheduled today settles days or weeks later, so this cannot be checked with the
batch. The bank's settlement feed (`erp_settlements`) is read per due day: one partition
per day in Berlin, holding the payments due that day. A payment not yet due passes; one
overdue without a settlement, failed, returned, settled late or for another amount fails
the check with its key in the metadata. The daily schedule re-runs yesterday's due day;
rematerialising an older day re-reads the feed (a return reported later shows up then).
"""

from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Optional
from zoneinfo import ZoneInfo

import dagster as dg

from assets.invoices.erp import ERPResource
from assets.invoices.workflow import WORKFLOW, erp_payments
from orchestration.core import clock
from orchestration.core.lineage import layer_group

TZ = ZoneInfo("Europe/Berlin")
# `end_offset=1`: today's due day exists (its payments pass as not yet due until it ends).
due_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="Europe/Berlin", end_offset=1)

PASSING = ("settled_on_time", "not_yet_due")
FAILING = ("overdue_unsettled", "failed", "returned", "settled_late", "amount_mismatch")


def _aware(dt: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def due_by(due_on) -> datetime:
    """A payment due on a day may settle until that day ends in Berlin."""
    return datetime.combine(due_on + timedelta(days=1), time(0), tzinfo=TZ)


def verdict(payment: dict, reports: list[dict], as_of: datetime) -> tuple[str, dict]:
    """One payment's verdict as of a moment, from the feed rows reported by then."""
    deadline = due_by(payment["due_on"])
    latest = reports[-1] if reports else None
    detail = {
        "payment_key": payment["idempotency_key"],
        "invoice_id": payment["invoice_id"],
        "due_on": payment["due_on"].isoformat(),
        "amount": str(payment["amount"]),
    }
    if latest is None:
        return ("not_yet_due" if as_of < deadline else "overdue_unsettled"), detail
    detail |= {"feed_status": latest["status"], "settled_at": _aware(latest["settled_at"]).isoformat()}
    if latest["status"] != "settled":
        return latest["status"], {**detail, "reason": latest.get("reason")}
    if Decimal(str(latest["amount"])) != Decimal(str(payment["amount"])) or latest["currency"] != payment["currency"]:
        return "amount_mismatch", {**detail, "settled_amount": f"{latest['amount']} {latest['currency']}"}
    if _aware(latest["settled_at"]) >= deadline:
        return "settled_late", detail
    return "settled_on_time", detail


def evaluate(erp: ERPResource, start, end, as_of: datetime) -> dict:
    """Verdicts for the live payments due in [start, end) (Berlin days) as of `as_of`."""
    due = erp.payments_due_between(start.date(), end.date())
    reports = erp.settlement_reports([p["idempotency_key"] for p in due], reported_by=as_of)
    by_verdict: dict[str, list[dict]] = {v: [] for v in PASSING + FAILING}
    for p in due:
        v, detail = verdict(p, reports.get(p["idempotency_key"], []), as_of)
        by_verdict[v].append(detail)
    return {
        "payments": len(due),
        "as_of": as_of.isoformat(),
        "by_verdict": by_verdict,
        "failing": sum(len(by_verdict[v]) for v in FAILING),
    }


class SettlementCheckConfig(dg.Config):
    as_of: Optional[str] = None  # ISO timestamp to evaluate at (a re-check "as of" a moment); default now


@dg.asset(
    partitions_def=due_days,
    group_name=layer_group(WORKFLOW, "verification"),
    deps=[erp_payments],
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(
            "payments_settled_by_due_date",
            asset="payment_settlements",
            partitions_def=due_days,
            description="Every payment due on the day was settled by the end of it (Berlin), for its amount; "
            "not yet due passes; overdue, failed, returned or late fails with the payment keys.",
        )
    ],
)
def payment_settlements(context: dg.AssetExecutionContext, config: SettlementCheckConfig, erp: ERPResource):
    """What became of the payments due on the day, from the bank's settlement feed."""
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else clock.now()
    as_of = _aware(as_of)
    window = context.partition_time_window
    result = evaluate(erp, window.start, window.end, as_of)
    counts = {v: len(rows) for v, rows in result["by_verdict"].items()}
    yield dg.MaterializeResult(
        metadata={
            "due_day": context.partition_key,
            "as_of": result["as_of"],
            "payments_due": result["payments"],
            **counts,
        }
    )
    if not result["payments"]:
        # No payment was due that day: there is nothing to judge, and a pass would prove nothing.
        yield dg.AssetCheckResult(
            check_name="payments_settled_by_due_date",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"no data: no payment was due on {context.partition_key}",
            metadata={"as_of": result["as_of"], "payments_due": 0},
        )
        return
    failing = {v: [d["payment_key"] for d in result["by_verdict"][v]] for v in FAILING if result["by_verdict"][v]}
    yield dg.AssetCheckResult(
        check_name="payments_settled_by_due_date",
        passed=not result["failing"],
        description=None
        if not result["failing"]
        else f"{result['failing']} of {result['payments']} payments due {context.partition_key} not settled in time",
        metadata={
            "as_of": result["as_of"],
            "payments_due": result["payments"],
            "failing": result["failing"],
            **counts,
            "failing_payment_keys": dg.MetadataValue.json({v: k[:100] for v, k in failing.items()}),
            "examples": dg.MetadataValue.json([d for v in FAILING for d in result["by_verdict"][v]][:20]),
        },
    )


settlement_job = dg.define_asset_job(
    "payment_settlement_job",
    selection=dg.AssetSelection.assets(payment_settlements),
    executor_def=dg.in_process_executor,
    tags={"bosun/workflow": "invoices"},
    description="Check the payments due on one day against the bank's settlement feed.",
)
