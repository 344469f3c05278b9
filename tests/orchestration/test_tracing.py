"""Spans per event through the five layers, exported over OTLP/HTTP; nothing when unset."""

from datetime import datetime, timedelta, timezone

from otlp_receiver import OtlpReceiver

from orchestration.verification import tracing

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def _stages():
    return [
        tracing.Stage("context", T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)),
        tracing.Stage("decision", T0 + timedelta(seconds=3), T0 + timedelta(seconds=4)),
        tracing.Stage("action", T0 + timedelta(seconds=4), T0 + timedelta(seconds=6)),
        tracing.Stage("verification", T0 + timedelta(seconds=6), T0 + timedelta(seconds=7)),
    ]


def test_no_endpoint_means_no_tracing(monkeypatch):
    for var in tracing.ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not tracing.enabled()
    assert tracing.record_event_traces("wf", "1-2", "run", _stages(), [{"key": "s:1", "received_at": T0}]) == 0


def test_each_event_is_a_trace_with_one_span_per_layer(monkeypatch):
    with OtlpReceiver() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "bosun-test")
        events = [
            {
                "key": f"erp:{i}",
                "received_at": T0 + timedelta(milliseconds=i),
                "outcome_at": T0 + timedelta(seconds=7),
                "attributes": {"bosun.decision": "approve", "bosun.confidence": 0.97},
            }
            for i in range(3)
        ]
        assert tracing.record_event_traces("wf", "1-3", "run-1", _stages(), events) == 3 * 6
    assert set(collector.paths) == {"/v1/traces"}
    roots = [s for s in collector.spans if not s["parent_id"]]
    assert sorted(r["attributes"]["bosun.event.key"] for r in roots) == ["erp:0", "erp:1", "erp:2"]
    for root in roots:
        assert root["service"] == "bosun-test" and root["name"] == "wf event"
        assert root["attributes"]["bosun.batch_id"] == "1-3" and root["attributes"]["dagster.run_id"] == "run-1"
        assert root["attributes"]["bosun.confidence"] == 0.97
        children = [s for s in collector.spans if s["parent_id"] == root["span_id"]]
        assert [c["name"] for c in sorted(children, key=lambda c: c["start"])] == list(tracing.LAYERS)
        assert all(c["trace_id"] == root["trace_id"] for c in children)
        trigger = next(c for c in children if c["name"] == "trigger")
        assert trigger["end"] - trigger["start"] < 2_000_000_000 + 1  # received -> the batch's first stage
        assert root["start"] <= min(c["start"] for c in children) and root["end"] >= max(c["end"] for c in children)
