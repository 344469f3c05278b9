"""Context assemblies per second, and the retrieval cache's hit rate on a repeat pattern.

For batches of 1,000 and 10,000 generated invoices (edge cases at the sample's rates,
vendors and POs repeating as in the sample stream), against a seeded SQLite ERP:

1. sources only - the batch's reads (vendors, POs, payments: one query each, through the
                  resilient reader): the floor any context costs;
2. context      - the whole record: sources, facts, conflicts, knowledge questions,
                  retrieval (cached), token-budget assembly with the local approximation;
3. context+tiktoken - the same with cl100k_base token counts (what an OpenAI model reads).

Then the retrieval cache on a realistic repeat pattern: ten consecutive batches of 1,000
from one stream, cache cleared first, hit rate per batch and overall.

    python benchmarks/context.py [--sizes 1000 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _world(base: Path, n: int):
    from assets.invoices import sample_data
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp
    from orchestration.trigger.envelope import EventEnvelope
    from orchestration.trigger.inbox import InboxEvent
    from orchestration.trigger.sample_events import read_events
    from resources.knowledge_base import PolicyDocuments, PolicyIndex

    os.environ["BOSUN_HOME"] = str(base)
    os.environ.pop("BOSUN_DATABASE_URL", None)
    sample = base / "sample"
    sample_data.write_sample_data(sample, n_invoices=n, seed=7)
    erp = ERPResource(url=f"sqlite:///{base / 'erp.db'}")
    seed_erp(erp, sample)
    raws = read_events(sample / "invoices.jsonl")
    seen, events = set(), []
    for r in raws:  # the inbox would have dropped re-deliveries
        if r["id"] not in seen:
            seen.add(r["id"])
            events.append(
                InboxEvent(
                    seq=len(events) + 1,
                    key=f"{r['source']}:{r['id']}",
                    envelope=EventEnvelope.model_validate(r),
                    status="received",
                    attempts=0,
                )
            )
    index = PolicyIndex(PolicyDocuments(directory=str(sample / "policies")).load())
    return erp, events, index


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from assets.invoices.context import assemble_context
    from assets.invoices.context_sources import read_batch_sources
    from orchestration.context.knowledge import retrieval_cache
    from orchestration.context.tokens import counter_for
    from resources.context_sources import ContextSources

    sources = ContextSources()
    tiktoken_counter = counter_for("gpt-4o")
    with tempfile.TemporaryDirectory(prefix="bosun-bench-context-") as tmp:
        erp, events, index = _world(Path(tmp), max(args.sizes))
        vendors, pos = erp.vendors_frame(), erp.purchase_orders_frame()
        print(
            f"{len(events)} events, {len(vendors)} vendors, {len(pos)} purchase orders, "
            f"{len(index.passages)} policy passages; best (median) of {args.repeat}"
        )
        for size in args.sizes:
            batch = events[:size]
            payloads = [e.envelope.payload for e in batch]
            floor, floor_med = _best(lambda: read_batch_sources(payloads, erp, sources, {}, {}), args.repeat)
            full, full_med = _best(lambda: assemble_context(batch, vendors, pos, erp, index, sources), args.repeat)
            tik, tik_med = _best(
                lambda: assemble_context(batch, vendors, pos, erp, index, sources, counter=tiktoken_counter),
                args.repeat,
            )
            records = assemble_context(batch, vendors, pos, erp, index, sources)
            tokens = [r["assembly"]["tokens"] for r in records]
            print(
                f"batch {size:>6}: sources only {size / floor:>9,.0f}/s ({size / floor_med:,.0f})  "
                f"context {size / full:>8,.0f} assemblies/s ({size / full_med:,.0f})  "
                f"context+tiktoken {size / tik:>7,.0f}/s ({size / tik_med:,.0f})  "
                f"context/sources-only time {full / floor:.1f}x  "
                f"tokens mean {statistics.mean(tokens):.0f} max {max(tokens)} budget {records[0]['assembly']['budget']}"
            )

        retrieval_cache.clear()
        per_batch = []
        stream = events[:10_000]
        for i in range(0, len(stream), 1000):
            before = retrieval_cache.stats()
            assemble_context(stream[i : i + 1000], vendors, pos, erp, index, sources)
            after = retrieval_cache.stats()
            h, m = after["hits"] - before["hits"], after["misses"] - before["misses"]
            per_batch.append(h / (h + m) if h + m else 0.0)
        total = retrieval_cache.stats()
        print(
            f"retrieval cache, {len(per_batch)} consecutive batches of 1,000 from one stream: "
            f"hit rate overall {total['hit_rate']:.4f} ({total['hits']} hits, {total['misses']} misses); "
            f"first batch {per_batch[0]:.4f}, later batches {min(per_batch[1:], default=0):.4f}-"
            f"{max(per_batch[1:], default=0):.4f}"
        )


if __name__ == "__main__":
    main()
