"""Per-batch metrics on invoice_actions (the series the UI plots, the rest as JSON), and rows Prometheus reads."""

import dagster as dg
from otlp_receiver import OtlpReceiver

from orchestration.verification import metrics, tracing
from orchestration.verification.metrics import CONFIDENCE_BUCKETS, LATENCY_BUCKETS_S


def _numeric(value) -> float:
    assert isinstance(value, (dg.IntMetadataValue, dg.FloatMetadataValue)), value
    return value.value


def _actions_metadata(world, key: str) -> dict:
    records = world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("invoice_actions"), asset_partitions=[key]), limit=1
    ).records
    return records[0].asset_materialization.metadata


def test_batch_run_puts_its_metrics_on_invoice_actions(make_small_world):
    from assets.invoices.decisions import invoice_policy

    world = make_small_world(n=120)
    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed

    counts = world.resources["bosun_db"].inbox().counts()["by_status"]
    seen_events = 0
    for key in report.batches:
        md = _actions_metadata(world, key)
        details = md[metrics.DETAILS].value
        n = _numeric(md[metrics.EVENTS])
        seen_events += n
        assert n == details["events"] == sum(details["states"].values())
        done, esc, dl = (details["outcomes"].get(s, 0) for s in ("done", "escalated", "dead_lettered"))
        assert _numeric(md[metrics.SUCCESS_RATE]) == round(done / n, 4)
        assert _numeric(md[metrics.ESCALATION_RATE]) == round(esc / n, 4)
        assert _numeric(md[metrics.DEAD_LETTER_RATE]) == round(dl / n, 4)
        p50, p95 = (_numeric(md[name]) for name in (metrics.LATENCY_P50, metrics.LATENCY_P95))
        assert 0 <= p50 <= p95 <= details["latency_received_to_outcome_s"]["p99"] < 600
        low, c05, c50 = (
            _numeric(md[name]) for name in (metrics.CONFIDENCE_MIN, metrics.CONFIDENCE_P05, metrics.CONFIDENCE_P50)
        )
        assert 0 <= low <= c05 <= c50 <= 1
        assert _numeric(md[metrics.THROUGHPUT]) > 0
        assert set(details["guardrail_activations"]) == set(invoice_policy().rule_names())
        assert details["input_tokens"] == 0 and details["cost_usd"] == 0  # the local model decided: no LLM tokens
        assert details["sagas"]["done"] <= details["sagas"]["planned"]
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


def _low_confidence_escalations(world) -> dict[str, int]:
    """Per batch, the decisions escalated because their confidence was below the act
    threshold (not by a rule), as the audit log recorded them."""
    import json

    import sqlalchemy as sa

    from orchestration.core.db import audit_log

    out: dict[str, int] = {}
    with world.resources["bosun_db"].audit().engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log.c.batch_id, audit_log.c.record).where(audit_log.c.kind == "decision"))
        for batch, record in rows:
            d = json.loads(record)
            low = d["route"] == "escalate" and d["guardrails"]["decision"] != "escalate"
            out[batch] = out.get(batch, 0) + low
    return out


def test_the_plots_are_an_ordered_few_and_low_confidence_shows_in_them(make_small_world):
    """What the UI plots for a batch (every numeric entry, sorted as strings): the headline
    series in their order, then only the guardrails that fired; no flat zeros for an LLM that
    is not configured, tokens, saga counts or the audit seq. A batch with low-confidence
    escalations has its confidence minimum below the act threshold, and only such a batch."""
    from assets.invoices.decisions import invoice_policy
    from orchestration.definitions import payload_registry
    from orchestration.trigger.sample_events import read_events

    world = make_small_world(n=400)
    events = read_events(world.sample / "invoices.jsonl")
    batches = []
    for i in range(0, len(events), 100):  # four batches
        world.resources["bosun_db"].inbox().ingest(events[i : i + 100], payload_registry)
        report = world.run_pending()
        assert report.batches and not report.failed
        batches += report.batches
    act = invoice_policy().confidence_threshold
    low = _low_confidence_escalations(world)
    assert any(low.get(b) for b in batches), "no batch escalated for low confidence: the test proves nothing"
    for key in batches:
        md = _actions_metadata(world, key)
        plotted = [k for k, v in md.items() if isinstance(v, (dg.IntMetadataValue, dg.FloatMetadataValue))]
        headline = [k for k in plotted if not k.startswith(metrics.GUARDRAIL)]
        assert headline == [s for s in metrics.SERIES if s not in (metrics.LLM_SHARE, metrics.LLM_COST)]
        assert plotted == sorted(plotted)  # the order they were written in is the UI's order
        assert all(_numeric(md[k]) > 0 for k in plotted if k.startswith(metrics.GUARDRAIL))
        fired = {k for k, n in md[metrics.DETAILS].value["guardrail_activations"].items() if n}
        assert {k.removeprefix(metrics.GUARDRAIL) for k in plotted if k.startswith(metrics.GUARDRAIL)} == fired
        assert (_numeric(md[metrics.CONFIDENCE_MIN]) < act) == bool(low.get(key)), (key, low.get(key))


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
    assert md[metrics.DETAILS].value["traces"]["spans"] == 6 * len(roots)
