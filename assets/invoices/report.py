"""How well the invoice decisions do, day by day, and what the failed ones have in common.

Read from the audit log's decision records and the reviewers' labels; shown as the
asset's metadata, so the Dagster UI is where an operator reads it (and plots the headline
figures across materializations).
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from assets.invoices.feedback import LABELS
from assets.invoices.workflow import EVENT_TYPES, WORKFLOW
from orchestration import clock
from orchestration import decision_report as report
from orchestration.lineage import layer_group
from orchestration.reviewed import decision_records, latest_feedback
from resources.database import BosunDatabase

REPORT_DAYS = 30
AMOUNT_BANDS = ((1_000, "< 1k"), (10_000, "1k-10k"), (50_000, "10k-50k"))
DIMENSIONS = ("vendor", "amount_band", "guardrail", "model", "prompt_version")


def amount_band(amount: float | None) -> str:
    if amount is None:
        return "unknown"
    return next((name for limit, name in AMOUNT_BANDS if amount < limit), ">= 50k")


def report_row(record: dict, label: str | None) -> dict:
    g = record.get("guardrails") or {}
    fired = [*g.get("blocked_by", []), *g.get("flagged_by", [])]
    return {
        "day": record["recorded_at"].astimezone(timezone.utc).date().isoformat(),
        "decision": record["decision"],
        "escalated": record["route"] == "escalate",
        "confidence": float(record["confidence"]),
        "label": label,
        "dims": {
            "vendor": (record.get("context_used") or {}).get("vendor_id") or "unknown",
            "amount_band": amount_band((record.get("facts") or {}).get("amount")),
            "guardrail": fired or ["none"],
            "model": f"{record['model']} {record.get('model_version') or ''}".strip(),
            "prompt_version": record.get("prompt_version") or "none (local model)",
        },
    }


def build_report(db_url: str, now: datetime | None = None, days: int = REPORT_DAYS) -> dict:
    since = (now or clock.now()) - timedelta(days=days)
    records = decision_records(db_url, since=since, event_types=EVENT_TYPES)
    # A label no decision can take (see feedback.LABELS) says nothing about right or wrong.
    labels = {s: f["label"] for s, f in latest_feedback(db_url, WORKFLOW).items() if f["label"] in LABELS}
    rows = [report_row(r, labels.get(s)) for s, r in records.items()]
    return {
        "summary": report.summary(rows),
        "by_day": report.by_day(rows),
        "patterns": report.failure_patterns(rows),
        "since": since.isoformat(),
    }


def report_markdown(r: dict) -> tuple[str, str]:
    days = report.markdown_table(r["by_day"], ["day", "decisions", "reviewed", "accuracy", "ece", "escalation_rate"])
    sections = [
        f"### by {dim}\n\n"
        + report.markdown_table(r["patterns"].get(dim, []), ["value", "reviewed", "failed", "failure_rate", "lift"])
        for dim in DIMENSIONS
    ]
    return days, "\n\n".join(sections)


@dg.asset(
    group_name=layer_group(WORKFLOW, "verification"),
    kinds={"sql"},
    deps=[dg.AssetDep("invoice_decisions", partition_mapping=dg.AllPartitionMapping())],
)
def invoice_decision_report(bosun_db: BosunDatabase) -> dg.MaterializeResult:
    """Accuracy and ECE (over reviewed decisions Bosun took itself) and escalation rate per
    day for the last 30 days, and per vendor, amount band, guardrail, model and prompt
    version how often the reviewed decisions failed (lift = times the overall rate)."""
    r = build_report(bosun_db.resolved_url)
    days, patterns = report_markdown(r)
    s = r["summary"]
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in s.items() if v is not None},  # no reviewed decision yet: no accuracy
            "by_day": dg.MetadataValue.md(days),
            "failure_patterns": dg.MetadataValue.md(patterns),
            "by_day_data": dg.MetadataValue.json(r["by_day"]),
            "patterns_data": dg.MetadataValue.json(r["patterns"]),
            "since": r["since"],
        }
    )
