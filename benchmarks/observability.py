"""What observability costs: per-batch metrics, OpenTelemetry spans, a Prometheus scrape.

1. batch metrics - real batch runs of the invoice workflow (in-process Dagster, SQLite):
                   each batch's `overhead_s` in its metrics details (computing the figures, reading the
                   events' times, writing the row) against the batch's run time;
2. spans         - `record_event_traces` for one batch of N events (6 spans each) through
                   the SDK's batch processor (default queue) into its in-memory exporter:
                   building and flushing the spans, without the network;
3. scrape        - `bosun metrics` exposition against the database of (1), then against
                   one holding 10,000 batch-metrics rows (a long-running deployment).

    python benchmarks/observability.py [--events 3000] [--batch-size 1000] [--rows 10000]

The machine is shared and noisy: read the ratios to the batch run time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from orchestration.core import clock


def batch_runs(base: Path, n_events: int, batch_size: int, seed: int) -> tuple[str, list[dict]]:
    import dagster as dg

    from assets.invoices import context_assets
    from assets.invoices.demo import prepare
    from assets.invoices.workflow import EVENT_TYPES, batch_policy, invoice_batches
    from orchestration.definitions import build_definitions, payload_registry
    from orchestration.trigger.runner import INSTANCE_OVERRIDES, QUIET, run_pending_batches
    from orchestration.trigger.sample_events import read_events
    from orchestration.verification import metrics

    os.environ["BOSUN_DATABASE_URL"] = f"sqlite:///{base / 'bosun.db'}"
    defs = build_definitions()
    prepare(base / "sample", n_events, seed, defs.resources["erp"], defs.resources["local_model"])
    inbox = defs.resources["bosun_db"].inbox()
    inbox.ingest(read_events(base / "sample" / "invoices.jsonl"), payload_registry)
    (base / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(base / "dagster"), overrides=INSTANCE_OVERRIDES) as instance:
        dg.materialize(context_assets, instance=instance, resources=defs.resources, run_config=QUIET)
        report = run_pending_batches(
            defs,
            "invoice_batch_job",
            invoice_batches,
            EVENT_TYPES,
            inbox,
            instance,
            replace(batch_policy, max_events=batch_size),
        )
        if report.failed:
            raise SystemExit(f"batch runs failed: {report.failed}")
        figures = []
        for key in report.batches:
            rec = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("invoice_actions"), asset_partitions=[key]), limit=1
            ).records[0]
            md = rec.asset_materialization.metadata
            stats = instance.get_run_stats(rec.run_id)
            figures.append(
                {
                    "events": md[metrics.EVENTS].value,
                    "overhead_s": md[metrics.DETAILS].value["overhead_s"],
                    "run_s": stats.end_time - stats.start_time,
                }
            )
    return defs.resources["bosun_db"].resolved_url, figures


def span_cost(n_events: int) -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestration.verification import tracing

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # as in production, default queue
    t0 = clock.now()
    stages = [
        tracing.Stage(layer, t0 + timedelta(seconds=i), t0 + timedelta(seconds=i + 1))
        for i, layer in enumerate(tracing.LAYERS[1:])
    ]
    events = [
        {
            "key": f"bench:{i}",
            "received_at": t0,
            "outcome_at": t0 + timedelta(seconds=5),
            "attributes": {"bosun.decision": "approve", "bosun.confidence": 0.9},
        }
        for i in range(n_events)
    ]
    started = time.perf_counter()
    spans = tracing.record_event_traces("bench", "1-2", "run", stages, events, provider=provider)
    took = time.perf_counter() - started
    assert spans == len(exporter.get_finished_spans()) == 6 * n_events
    return took


def scrape_s(url: str, repeat: int = 3) -> float:
    from orchestration.verification.prometheus import exposition

    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        exposition(url)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def synthetic_rows(url: str, rows: int) -> None:
    from orchestration.verification import metrics

    store = metrics.MetricsStore(url)
    now = clock.now()
    for i in range(rows):
        m = metrics.compute(
            "bench",
            f"{i}-{i}",
            f"run-{i}",
            now - timedelta(seconds=2),
            [{"status": "done", "received_at": now - timedelta(seconds=1), "outcome_at": now}] * 10,
            [
                {
                    "decision": "approve",
                    "route": "act",
                    "confidence": 0.9,
                    "guardrails": ["g1"],
                    "model": "local",
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                }
            ]
            * 10,
            ["g1", "g2"],
        )
        store.record(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bosun-bench-obs-"))
    os.environ["BOSUN_HOME"] = str(base)
    for var in (
        "BOSUN_DATABASE_URL",
        "BOSUN_ERP_DATABASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        os.environ.pop(var, None)

    url, batches = batch_runs(base, args.events, args.batch_size, args.seed)
    overhead = sum(b["overhead_s"] for b in batches)
    run_s = sum(b["run_s"] for b in batches)
    spans_s = span_cost(args.batch_size)
    scrape_demo = scrape_s(url)
    synthetic_url = f"sqlite:///{base / 'rows.db'}"
    t = time.perf_counter()
    synthetic_rows(synthetic_url, args.rows)
    write_s = time.perf_counter() - t
    scrape_rows = scrape_s(synthetic_url)
    print(
        json.dumps(
            {
                "batch_metrics": {
                    "batches": len(batches),
                    "events": sum(b["events"] for b in batches),
                    "overhead_s_per_batch": round(overhead / len(batches), 4),
                    "run_s_per_batch": round(run_s / len(batches), 3),
                    "overhead_share_of_run": round(overhead / run_s, 4),
                },
                "spans": {
                    "events": args.batch_size,
                    "spans": 6 * args.batch_size,
                    "seconds": round(spans_s, 4),
                    "share_of_batch_run": round(spans_s / (run_s / len(batches)), 4),
                },
                "scrape": {
                    "after_batches_s": round(scrape_demo, 4),
                    "rows": args.rows,
                    "with_rows_s": round(scrape_rows, 4),
                    "row_write_ms": round(1000 * write_s / args.rows, 3),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
