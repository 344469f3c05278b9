"""Batch metrics: buckets, rates, percentiles, and rows that add up on SQLite and Postgres."""

from datetime import datetime, timedelta, timezone

import pytest

from orchestration import metrics

T = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _event(status, latency_s):
    return {"status": status, "received_at": T, "outcome_at": T + timedelta(seconds=latency_s)}


def _decision(confidence, guardrails=(), decision="approve", route="act", tokens=0, cost=0.0):
    return {
        "decision": decision,
        "route": route,
        "confidence": confidence,
        "guardrails": list(guardrails),
        "model": "local" if not tokens else "gpt",
        "input_tokens": tokens,
        "output_tokens": tokens // 2,
        "cost_usd": cost,
    }


def test_buckets_count_a_value_on_its_bound_and_overflow_in_inf():
    assert metrics.bucket_counts([0.1, 0.10001, 5.0, 99.0], (0.1, 1, 5)) == [1, 1, 1, 1]


def test_compute_rates_percentiles_and_every_guardrail():
    events = [_event("done", 1), _event("done", 2), _event("escalated", 3), _event("dead_lettered", 10)]
    decisions = [
        _decision(0.9),
        _decision(0.95, ["vendor_known"]),
        _decision(0.4, ["vendor_known", "limit"], "escalate", "escalate", tokens=100, cost=0.01),
        _decision(0.99),
    ]
    m = metrics.compute(
        "wf", "1-4", "run-1", T - timedelta(seconds=10), events, decisions, ["vendor_known", "limit", "never_fired"]
    )
    md = m.metadata()
    assert md["metrics.events"] == 4
    assert (md["metrics.success_rate"], md["metrics.escalation_rate"], md["metrics.failure_rate"]) == (0.5, 0.25, 0.25)
    assert md["metrics.run_seconds"] == 20 and md["metrics.throughput_events_per_s"] == 0.2
    assert md["metrics.latency_received_to_outcome_p50_s"] == 2.5
    assert md["metrics.latency_received_to_outcome_p50_s"] <= md["metrics.latency_received_to_outcome_p99_s"] <= 10
    assert md["metrics.confidence_p50"] == pytest.approx(0.925)
    assert (
        md["metrics.guardrail.vendor_known.activations"],
        md["metrics.guardrail.limit.activations"],
        md["metrics.guardrail.never_fired.activations"],
    ) == (2, 1, 0)
    assert (md["metrics.input_tokens"], md["metrics.output_tokens"], md["metrics.cost_usd"]) == (100, 50, 0.01)
    assert all(isinstance(v, (int, float)) for v in md.values())


def test_a_run_that_finished_nothing_plots_no_rates():
    md = metrics.compute("wf", "1-1", "run-0", T, [], [], ["g"]).metadata()
    assert md["metrics.events"] == 0 and "metrics.success_rate" not in md and md["metrics.guardrail.g.activations"] == 0


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'm.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_rows_are_per_run_and_add_up(db_url):
    store = metrics.MetricsStore(db_url)
    first = metrics.compute(
        "wf", "1-3", "run-a", T, [_event("done", 1), _event("done", 30)], [_decision(0.9), _decision(0.5, ["g"])], ["g"]
    )
    store.record(first)
    store.record(first)  # a step retried in the same run replaces its row
    store.record(
        metrics.compute(
            "wf",
            "1-3",
            "run-b",
            T,
            [_event("escalated", 0.2)],
            [_decision(0.3, ["g"], "escalate", "escalate", tokens=10, cost=0.5)],
            ["g"],
        )
    )
    store.record(metrics.compute("other", "9-9", "run-c", T, [_event("done", 1)], [_decision(1.0)], []))
    t = store.totals()
    wf = t["wf"]
    assert (wf["batch_runs"], wf["events"], wf["outcomes"]) == (2, 3, {"done": 2, "escalated": 1})
    assert wf["decisions"] == {"approve|act": 2, "escalate|escalate": 1} and wf["guardrails"] == {"g": 2}
    assert (wf["input_tokens"], wf["cost_usd"]) == (10, 0.5)
    latency = wf["histograms"]["latency_s"]
    assert sum(latency["counts"]) == 3 and latency["sum"] == pytest.approx(31.2)
    assert latency["counts"][metrics.LATENCY_BUCKETS_S.index(30)] == 1  # 30 s falls in le=30
    assert sum(wf["histograms"]["confidence"]["counts"]) == 3
    assert t["other"]["events"] == 1
