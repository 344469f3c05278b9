"""Decision quality over time and what the failed decisions have in common.

Input rows are workflow-neutral: `day`, `decision` (what was decided), `escalated`,
`confidence`, `label` (what a reviewer said was right, or None) and `dims` (dimension ->
one value or a list of values, e.g. {"vendor": "V0001", "guardrail": ["po_closed"]}).
A decision sent to a person is not counted as wrong: it asked.
"""

from __future__ import annotations

from collections import defaultdict

from orchestration.model_quality import score


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
