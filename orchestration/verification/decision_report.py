"""Decision quality over time and what the failed decisions have in common.

Input rows are workflow-neutral: `day`, `decision` (what was decided), `escalated`,
`confidence`, `label` (what a reviewer said was right, or None) and `dims` (dimension ->
one value or a list of values, e.g. {"vendor": "V0001", "guardrail": ["po_closed"]}).
A decision sent to a person is not counted as wrong: it asked.

`build_decision_report_asset` makes it a workflow's report asset: rows from the audit log's
decision records and the reviewers' labels, shown as the asset's metadata, so the Dagster UI
is where an operator reads it (and plots the headline figures across materializations). A
workflow adds its own dimensions (e.g. vendor, amount band) to the standard ones.
"""

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping, Sequence

import dagster as dg

from orchestration.core import clock
from orchestration.core.lineage import layer_group
from orchestration.decision.model_quality import score
from orchestration.review.reviewed import decision_records, latest_feedback

# Every decision record says which guardrails fired, which model and which prompt decided.
STANDARD_DIMENSIONS = ("guardrail", "model", "prompt_version")
REPORT_DAYS = 30

Dimension = Callable[[dict], object]  # a decision record -> its value (or values) in that dimension


def _judged(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["label"] is not None and not r["escalated"]]


def by_day(rows: list[dict]) -> list[dict]:
    days: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        days[r["day"]].append(r)
    out = []
    for day in sorted(days):
        rs = days[day]
        judged = _judged(rs)
        s = score([r["label"] for r in judged], [r["decision"] for r in judged], [r["confidence"] for r in judged])
        out.append(
            {
                "day": day,
                "decisions": len(rs),
                "reviewed": sum(r["label"] is not None for r in rs),
                "accuracy": s["accuracy"],
                "ece": s["ece"],
                "escalation_rate": round(sum(r["escalated"] for r in rs) / len(rs), 4),
            }
        )
    return out


def failure_patterns(rows: list[dict], top: int = 10, min_reviewed: int = 1) -> dict[str, list[dict]]:
    """Per dimension, the values whose reviewed decisions failed most, with the failure
    rate and its lift over the overall rate (2.0 = twice as often as on average)."""
    judged = _judged(rows)
    overall = sum(r["decision"] != r["label"] for r in judged) / len(judged) if judged else 0.0
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in judged:
        failed = r["decision"] != r["label"]
        for dim, value in r["dims"].items():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                c = counts[dim][str(v)]
                c[0] += 1
                c[1] += failed
    out = {}
    for dim, values in counts.items():
        rows_ = [
            {
                "value": v,
                "reviewed": n,
                "failed": f,
                "failure_rate": round(f / n, 4),
                "lift": round((f / n) / overall, 2) if overall else None,
            }
            for v, (n, f) in values.items()
            if n >= min_reviewed
        ]
        rows_.sort(key=lambda x: (-x["failed"], -x["failure_rate"], x["value"]))
        out[dim] = rows_[:top]
    return out


def summary(rows: list[dict]) -> dict:
    judged = _judged(rows)
    s = score([r["label"] for r in judged], [r["decision"] for r in judged], [r["confidence"] for r in judged])
    return {
        "decisions": len(rows),
        "reviewed": sum(r["label"] is not None for r in rows),
        "judged": s["examples"],
        "failed": sum(r["decision"] != r["label"] for r in judged),
        "accuracy": s["accuracy"],
        "ece": s["ece"],
        "escalation_rate": round(sum(r["escalated"] for r in rows) / len(rows), 4) if rows else None,
    }


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report_row(record: dict, label: str | None, dimensions: Mapping[str, Dimension]) -> dict:
    g = record.get("guardrails") or {}
    fired = [*g.get("blocked_by", []), *g.get("flagged_by", [])]
    return {
        "day": record["recorded_at"].astimezone(timezone.utc).date().isoformat(),
        "decision": record["decision"],
        "escalated": record["route"] == "escalate",
        "confidence": float(record["confidence"]),
        "label": label,
        "dims": {
            **{name: value(record) for name, value in dimensions.items()},
            "guardrail": fired or ["none"],
            "model": f"{record['model']} {record.get('model_version') or ''}".strip(),
            "prompt_version": record.get("prompt_version") or "none (local model)",
        },
    }


def build_report(
    db_url: str,
    workflow: str,
    event_types: Sequence[str],
    labels: Sequence[str],
    dimensions: Mapping[str, Dimension],
    now: datetime | None = None,
    days: int = REPORT_DAYS,
) -> dict:
    since = (now or clock.now()) - timedelta(days=days)
    records = decision_records(db_url, since=since, event_types=event_types)
    # A label no decision can take (outside `labels`) says nothing about right or wrong.
    latest = {s: f["label"] for s, f in latest_feedback(db_url, workflow).items() if f["label"] in labels}
    rows = [report_row(r, latest.get(s), dimensions) for s, r in records.items()]
    return {
        "summary": summary(rows),
        "by_day": by_day(rows),
        "patterns": failure_patterns(rows),
        "since": since.isoformat(),
    }


def report_markdown(r: dict, dimensions: Sequence[str]) -> tuple[str, str]:
    days = markdown_table(r["by_day"], ["day", "decisions", "reviewed", "accuracy", "ece", "escalation_rate"])
    sections = [
        f"### by {dim}\n\n"
        + markdown_table(r["patterns"].get(dim, []), ["value", "reviewed", "failed", "failure_rate", "lift"])
        for dim in dimensions
    ]
    return days, "\n\n".join(sections)


def build_decision_report_asset(
    name: str,
    workflow: str,
    event_types: Sequence[str],
    labels: Sequence[str],
    decisions: str,
    dimensions: Mapping[str, Dimension],
    days: int = REPORT_DAYS,
) -> dg.AssetsDefinition:
    """Accuracy and ECE (over reviewed decisions Bosun took itself) and escalation rate per day
    for the last `days` days, and per dimension how often the reviewed decisions failed, as the
    asset `name` downstream of every partition of the `decisions` asset."""
    names = [*dimensions, *STANDARD_DIMENSIONS]
    spoken = [n.replace("_", " ") for n in names]

    @dg.asset(
        name=name,
        group_name=layer_group(workflow, "verification"),
        kinds={"sql"},
        deps=[dg.AssetDep(decisions, partition_mapping=dg.AllPartitionMapping())],
        required_resource_keys={"bosun_db"},
        description=f"Accuracy and ECE (over reviewed decisions Bosun took itself) and escalation rate per "
        f"day for the last {days} days, and per {', '.join(spoken[:-1])} and {spoken[-1]} how often the "
        "reviewed decisions failed (lift = times the overall rate).",
    )
    def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        r = build_report(context.resources.bosun_db.resolved_url, workflow, event_types, labels, dimensions, days=days)
        by_day_md, patterns_md = report_markdown(r, names)
        return dg.MaterializeResult(
            metadata={
                **{k: v for k, v in r["summary"].items() if v is not None},  # no reviewed decision yet: no accuracy
                "by_day": dg.MetadataValue.md(by_day_md),
                "failure_patterns": dg.MetadataValue.md(patterns_md),
                "by_day_data": dg.MetadataValue.json(r["by_day"]),
                "patterns_data": dg.MetadataValue.json(r["patterns"]),
                "since": r["since"],
            }
        )

    return _report
