"""Throughput of the invoice path on generated events, three ways in one process.

1. bare loop   - the same per-event work (context, model, guardrails, ERP writes, inbox
                 states) in chunks, no Dagster, no audit log;
2. Bosun       - one in-process Dagster run per batch, on a persistent SQLite instance,
                 audit log included: what the sensor path runs;
3. run/event   - one Dagster run per event, on a sample, extrapolated.

Each way gets a fresh database with the same ERP; the figures that matter are the
ratios, since this machine is shared and noisy.

    python benchmarks/throughput.py [--events 10000] [--batch-size 1000] [--per-event-sample 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _fresh_world(base: Path, name: str, sample: Path):
    """Point Bosun at a new SQLite file and seed its ERP with the sample's master data."""
    from assets.invoices.training import seed_erp
    from orchestration.definitions import build_definitions

    os.environ["BOSUN_DATABASE_URL"] = f"sqlite:///{base / f'{name}.db'}"
    defs = build_definitions()
    seed_erp(defs.resources["erp"], sample)
    return defs


def _ingest(defs, events):
    from orchestration.definitions import payload_registry

    return defs.resources["bosun_db"].inbox().ingest(events, payload_registry)


def bare_loop(defs, batch_size: int) -> int:
    from assets.invoices.actions import ACTIONS
    from assets.invoices.context import assemble_context
    from assets.invoices.decisions import decide
    from assets.invoices.payment_saga import saga_executor
    from assets.invoices.workflow import EVENT_TYPES
    from orchestration.action.batch import execute, outcomes

    r = defs.resources
    inbox, erp = r["bosun_db"].inbox(), r["erp"]
    vendors, pos = erp.vendors_frame(), erp.purchase_orders_frame()
    from resources.knowledge_base import PolicyIndex

    index = PolicyIndex(r["policy_documents"].load())
    done, cursor = 0, 0
    while True:
        pending = inbox.pending_after(cursor, EVENT_TYPES, batch_size)
        if not pending:
            return done
        first, last = pending[0][0], pending[-1][0]
        events = inbox.events_between(first, last, EVENT_TYPES)
        decisions = decide(assemble_context(events, vendors, pos, erp, index), r["local_model"], r["llm"])
        sagas = execute(decisions, saga_executor(r, "bare-loop"), ACTIONS, f"bare-{first}-{last}")
        inbox.set_states(outcomes(decisions, sagas, ACTIONS))
        done += len(events)
        cursor = last


def dagster_batches(defs, instance_dir: Path, batch_size: int) -> tuple[int, int]:
    import dagster as dg

    from assets.invoices import context_assets
    from assets.invoices.workflow import EVENT_TYPES, batch_policy, invoice_batches
    from orchestration.trigger.runner import INSTANCE_OVERRIDES, QUIET, run_pending_batches

    instance_dir.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(tempdir=str(instance_dir), overrides=INSTANCE_OVERRIDES) as instance:
        dg.materialize(context_assets, instance=instance, resources=defs.resources, run_config=QUIET)
        started = time.perf_counter()
        report = run_pending_batches(
            defs,
            "invoice_batch_job",
            invoice_batches,
            EVENT_TYPES,
            defs.resources["bosun_db"].inbox(),
            instance,
            replace(batch_policy, max_events=batch_size),
        )
        elapsed = time.perf_counter() - started
    if report.failed or report.check_failures:
        raise SystemExit(f"batch runs failed: {report.failed} {report.check_failures}")
    return len(report.batches), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--per-event-sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bosun-bench-"))
    os.environ["BOSUN_HOME"] = str(base)
    for var in (
        "BOSUN_DATABASE_URL",
        "BOSUN_ERP_DATABASE_URL",
        "BOSUN_OUTBOX_DATABASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ):
        os.environ.pop(var, None)
    from assets.invoices.demo import prepare
    from orchestration.trigger.sample_events import read_events

    os.environ["BOSUN_DATABASE_URL"] = f"sqlite:///{base / 'setup.db'}"
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    prepare(base / "sample", args.events, args.seed, defs.resources["erp"], defs.resources["local_model"])
    events = read_events(base / "sample" / "invoices.jsonl")
    results = {}

    defs = _fresh_world(base, "bare", base / "sample")
    t = time.perf_counter()
    ingest = _ingest(defs, events)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    n = bare_loop(defs, args.batch_size)
    results["bare_loop"] = {"events": n, "seconds": round(time.perf_counter() - t, 3)}

    defs = _fresh_world(base, "bosun", base / "sample")
    _ingest(defs, events)
    batches, elapsed = dagster_batches(defs, base / "dagster_batches", args.batch_size)
    results["bosun_batches"] = {"events": ingest.accepted, "batches": batches, "seconds": round(elapsed, 3)}

    defs = _fresh_world(base, "per_event", base / "sample")
    _ingest(defs, events[: args.per_event_sample])
    runs, elapsed = dagster_batches(defs, base / "dagster_per_event", 1)
    results["run_per_event"] = {"events": runs, "seconds": round(elapsed, 3), "extrapolated": True}

    for r in results.values():
        r["events_per_s"] = round(r["events"] / r["seconds"], 1)
    bare, bosun, per_event = (results[k]["events_per_s"] for k in ("bare_loop", "bosun_batches", "run_per_event"))
    print(
        json.dumps(
            {
                "events": ingest.accepted,
                "batch_size": args.batch_size,
                "ingest_events_per_s": round(ingest.accepted / ingest_s, 1),
                **results,
                "ratios": {
                    "bare_over_bosun": round(bare / bosun, 2),
                    "bosun_over_run_per_event": round(bosun / per_event, 1),
                },
                "extrapolated_run_per_event_seconds_for_all": round(ingest.accepted / per_event, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
