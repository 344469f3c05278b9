"""Per-batch metrics are numeric metadata on invoice_actions, and rows Prometheus reads."""

import dagster as dg
from otlp_receiver import OtlpReceiver

from orchestration import tracing
from orchestration.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_S


def _numeric(value) -> float:
    assert isinstance(value, (dg.IntMetadataValue, dg.FloatMetadataValue)), value
    return value.value


def test_batch_run_puts_its_metrics_on_invoice_actions(make_small_world):
    from assets.invoices.decisions import invoice_policy

    world = make_small_world(n=120)
    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed

    counts = world.resources["bosun_db"].inbox().counts()["by_status"]
    seen_events = 0
    for key in report.batches:
        records = world.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("invoice_actions"), asset_partitions=[key]), limit=1
        ).records
        md = records[0].asset_materialization.metadata
        n = _numeric(md["metrics.events"])
        seen_events += n
        assert n == _numeric(md["events"])
        done, esc, dl = (
            _numeric(md.get(f"metrics.outcome.{s}", dg.IntMetadataValue(0)))
            for s in ("done", "escalated", "dead_lettered")
        )
        assert _numeric(md["metrics.success_rate"]) == round(done / n, 4)
        assert _numeric(md["metrics.escalation_rate"]) == round(esc / n, 4)
        assert _numeric(md["metrics.failure_rate"]) == round(dl / n, 4)
        p50, p95, p99 = (_numeric(md[f"metrics.latency_received_to_outcome_p{q}_s"]) for q in (50, 95, 99))
        assert 0 <= p50 <= p95 <= p99 < 600
        c10, c50, c90 = (_numeric(md[f"metrics.confidence_p{q}"]) for q in (10, 50, 90))
        assert 0 <= c10 <= c50 <= c90 <= 1
        assert _numeric(md["metrics.throughput_events_per_s"]) > 0
        for rule in invoice_policy().rule_names():
            assert _numeric(md[f"metrics.guardrail.{rule}.activations"]) >= 0
        assert _numeric(md["metrics.input_tokens"]) == 0  # the local model decided: no LLM tokens
        assert _numeric(md["metrics.cost_usd"]) == 0
    # Every decided event is counted once (triage verdicts never reach the action layer).
    assert seen_events == sum(counts.get(s, 0) for s in ("done", "escalated", "dead_lettered"))

    totals = world.resources["bosun_db"].metrics().totals()["invoices"]
    assert totals["events"] == seen_events
    assert totals["outcomes"] == {s: counts[s] for s in ("done", "escalated", "dead_lettered") if counts.get(s)}
    assert sum(totals["decisions"].values()) == seen_events
    assert sum(totals["histograms"]["confidence"]["counts"]) == seen_events
    assert sum(totals["histograms"]["latency_s"]["counts"]) == seen_events
    assert len(totals["histograms"]["confidence"]["counts"]) == len(CONFIDENCE_BUCKETS) + 1
    assert len(totals["histograms"]["latency_s"]["counts"]) == len(LATENCY_BUCKETS_S) + 1


def test_with_an_otlp_endpoint_each_decided_event_is_traced_through_the_layers(make_small_world, monkeypatch):
    world = make_small_world(n=40)
    world.ingest_sample()
    with OtlpReceiver() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        report = world.run_pending()
    assert report.batches and not report.failed
    rows = (
        world.resources["bosun_db"]
        .inbox()
        .lookup([r["attributes"]["bosun.event.key"] for r in collector.spans if not r["parent_id"]])
    )
    decided = world.resources["bosun_db"].inbox().counts()["by_status"]
    roots = [s for s in collector.spans if not s["parent_id"]]
    assert len(roots) == decided.get("done", 0) + decided.get("escalated", 0) + decided.get("dead_lettered", 0)
    for root in roots:
        attrs = root["attributes"]
        assert attrs["bosun.status"] == rows[attrs["bosun.event.key"]]["status"]
        assert attrs["bosun.batch_id"] in report.batches and attrs["bosun.workflow"] == "invoices"
        layers = sorted((s for s in collector.spans if s["parent_id"] == root["span_id"]), key=lambda s: s["start"])
        assert [s["name"] for s in layers] == list(tracing.LAYERS)
        for earlier, later in zip(layers, layers[1:]):
            assert earlier["start"] <= later["start"]
    md = (
        world.instance.fetch_materializations(dg.AssetKey("invoice_actions"), limit=1)
        .records[0]
        .asset_materialization.metadata
    )
    assert md["traces.spans"].value == 6 * len(roots)
