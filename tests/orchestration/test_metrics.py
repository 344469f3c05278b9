"""Batch metrics: buckets, rates, percentiles, and rows that add up on SQLite and Postgres."""

from datetime import datetime, timedelta, timezone

import pytest

from orchestration.verification import metrics

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
    md = m.series()
    assert md[metrics.EVENTS] == 4
    assert (md[metrics.SUCCESS_RATE], md[metrics.ESCALATION_RATE], md[metrics.DEAD_LETTER_RATE]) == (0.5, 0.25, 0.25)
    assert md[metrics.THROUGHPUT] == 0.2 and m.details()["run_seconds"] == 20
    assert md[metrics.LATENCY_P50] == 2.5 and md[metrics.LATENCY_P50] <= md[metrics.LATENCY_P95] <= 10
    assert md[metrics.CONFIDENCE_MIN] == 0.4 and md[metrics.CONFIDENCE_P50] == pytest.approx(0.925)
    assert md[metrics.CONFIDENCE_MIN] <= md[metrics.CONFIDENCE_P05] <= md[metrics.CONFIDENCE_P50]
    # One of four decisions went to the LLM, for a cent.
    assert (md[metrics.LLM_SHARE], md[metrics.LLM_COST]) == (0.25, 0.01)
    # Per guardrail that fired; the one that never did is only in the details, as a zero.
    assert (md[metrics.GUARDRAIL + "vendor_known"], md[metrics.GUARDRAIL + "limit"]) == (2, 1)
    assert metrics.GUARDRAIL + "never_fired" not in md
    details = m.details()
    assert details["guardrail_activations"] == {"limit": 1, "never_fired": 0, "vendor_known": 2}
    assert (details["input_tokens"], details["output_tokens"], details["cost_usd"]) == (100, 50, 0.01)
    assert details["latency_received_to_outcome_s"]["p99"] <= 10
    assert all(isinstance(v, (int, float)) for v in md.values())


def test_the_plotted_series_sort_in_their_order_and_the_rest_is_one_json_entry():
    events = [_event("done", 1), _event("escalated", 2)]
    decisions = [_decision(0.9, ["g"]), _decision(0.5, [], "escalate", "escalate", tokens=10, cost=0.1)]
    md = metrics.compute("wf", "1-2", "run-1", T - timedelta(seconds=5), events, decisions, ["g"]).metadata(
        details={"sagas": {"paid": 1}}
    )
    names = [k for k in md if k != metrics.DETAILS]
    # The UI sorts labels as strings: that order is the intended one, every series present.
    assert names == sorted(names) == [*metrics.SERIES, metrics.GUARDRAIL + "g"]
    assert md[metrics.DETAILS]["sagas"] == {"paid": 1} and md[metrics.DETAILS]["events"] == 2


def test_without_an_llm_its_share_and_cost_are_not_plotted():
    md = metrics.compute("wf", "1-1", "run-1", T, [_event("done", 1)], [_decision(0.9)], []).series(llm=False)
    assert metrics.LLM_SHARE not in md and metrics.LLM_COST not in md and md[metrics.SUCCESS_RATE] == 1


def test_a_rules_escalation_does_not_count_as_a_confident_decision():
    events = [_event("done", 1), _event("escalated", 1), _event("escalated", 1)]
    decisions = [
        _decision(0.97),
        {**_decision(1.0, ["no_instructions"], "escalate", "escalate"), "escalated_by_rule": True},
        _decision(0.6, [], "escalate", "escalate"),  # below the act threshold
    ]
    m = metrics.compute("wf", "1-3", "run-1", T, events, decisions, ["no_instructions"])
    md = m.series()
    assert md[metrics.CONFIDENCE_MIN] == 0.6 and md[metrics.CONFIDENCE_P50] == pytest.approx(0.785)
    assert m.details()["confidence"]["escalated_by_rule"] == 1
    assert sum(m.histograms()["confidence"]["counts"]) == 3  # Prometheus still sees every decision


def test_a_run_that_finished_nothing_plots_no_rates():
    m = metrics.compute("wf", "1-1", "run-0", T, [], [], ["g"])
    md = m.series()
    assert md == {metrics.EVENTS: 0} and m.details()["guardrail_activations"] == {"g": 0}


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
