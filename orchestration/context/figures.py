"""A batch's context in figures, for the context asset's materialization: how its sources
were read, what lowered the records' quality, the conflicts, the knowledge gaps and the
retrieval cache, and the assembled documents against their token budget. Per-decision
detail is in the audit (`bosun explain`); a workflow adds the counts of its own facts."""

from __future__ import annotations

import dagster as dg

from orchestration.context.knowledge import retrieval_cache


def context_figures(records: list[dict], cache_before: dict) -> dict:
    """`cache_before`: the retrieval cache's stats when the batch began (its hits and misses
    since are the batch's)."""
    n = len(records) or 1
    factors: dict[str, int] = {}
    gaps: dict[str, int] = {}
    dropped = summarised = 0
    for r in records:
        for f in r["quality_factors"]:
            factors[f["name"]] = factors.get(f["name"], 0) + 1
        for g in r.get("knowledge", {}).get("gaps", []):
            gaps[g] = gaps.get(g, 0) + 1
        dropped += len(r["assembly"]["dropped"])
        summarised += sum(1 for k in r["assembly"]["kept"] if k["form"] == "summary")
    cache = retrieval_cache.stats()
    hits, misses = cache["hits"] - cache_before["hits"], cache["misses"] - cache_before["misses"]
    tokens = [r["assembly"]["tokens"] for r in records] or [0]
    sources = records[0]["sources"] if records else {}
    return {
        "sources": dg.MetadataValue.json(sources),
        **{f"source_{name}": s["status"] for name, s in sources.items()},
        "degraded_sources": sum(1 for s in sources.values() if s["status"] != "live"),
        "quality_factors": dg.MetadataValue.json(factors),
        "conflicts": sum(len(r["conflicts"]) for r in records),
        "unresolved_conflicts": sum(1 for r in records for c in r["conflicts"] if not c["resolved"]),
        "knowledge_gaps": sum(gaps.values()),
        "knowledge_gaps_by_question": dg.MetadataValue.json(gaps),
        "retrieval_cache_hits": hits,
        "retrieval_cache_misses": misses,
        "retrieval_cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "token_budget": records[0]["assembly"]["budget"] if records else 0,
        "tokenizer": records[0]["assembly"]["tokenizer"] if records else "",
        "tokens_mean": round(sum(tokens) / n, 1),
        "tokens_max": max(tokens),
        "over_budget": sum(1 for r in records if not r["assembly"]["within_budget"]),
        "items_dropped": dropped,
        "items_summarised": summarised,
        "example_assembly": dg.MetadataValue.json(
            {r["event_id"]: {k: v for k, v in r["assembly"].items() if k != "document"} for r in records[:2]}
        ),
    }
