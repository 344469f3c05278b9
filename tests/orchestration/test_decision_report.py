import pytest

from orchestration.verification.decision_report import by_day, failure_patterns, markdown_table, summary

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead


def _row(day, decision, label, escalated=False, conf=0.9, vendor="V1", guardrails=("none",)):
    return {
        "day": day,
        "decision": decision,
        "label": label,
        "escalated": escalated,
        "confidence": conf,
        "dims": {"vendor": vendor, "guardrail": list(guardrails)},
    }


ROWS = [
    _row("2026-11-01", "approve", "approve"),
    _row("2026-11-01", "approve", "hold", vendor="V2"),
    _row("2026-11-01", "approve", None, escalated=True),
    _row("2026-11-02", "hold", "hold"),
    _row("2026-11-02", "approve", "reject", vendor="V2", guardrails=("amount_limit",)),
    _row("2026-11-02", "approve", "hold", escalated=True, vendor="V2"),
]


def test_quality_by_day_counts_escalations_as_asking_not_failing():
    days = by_day(ROWS)
    assert [(d["day"], d["decisions"], d["reviewed"], d["accuracy"], d["escalation_rate"]) for d in days] == [
        ("2026-11-01", 3, 2, 0.5, 0.3333),
        ("2026-11-02", 3, 3, 0.5, 0.3333),
    ]
    assert days[0]["ece"] == 0.4  # stated 0.9, right half the time
    s = summary(ROWS)
    assert (s["decisions"], s["reviewed"], s["judged"], s["failed"], s["accuracy"]) == (6, 5, 4, 2, 0.5)


def test_failure_patterns_rank_what_failed_decisions_share():
    p = failure_patterns(ROWS)
    assert p["vendor"][0] == {"value": "V2", "reviewed": 2, "failed": 2, "failure_rate": 1.0, "lift": 2.0}
    assert p["vendor"][1]["value"] == "V1" and p["vendor"][1]["failed"] == 0
    assert {r["value"] for r in p["guardrail"]} == {"none", "amount_limit"}
    md = markdown_table(p["vendor"], ["value", "failed"])
    assert md.splitlines()[0] == "| value | failed |" and "| V2 | 2 |" in md
    assert markdown_table([]) == "_none_"
