"""How well a knowledge base's retrieval finds what a labelled query set says it should:
recall@k (the share of queries with a relevant document in the first k), recall@1 and MRR.
Any retrieval fits: `search(queries, k)` answers, per query, (document id, score) pairs best first."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import dagster as dg

Search = Callable[[list[str], int], Sequence[Sequence[tuple[str, float]]]]


def retrieval_quality(search: Search, labelled: Sequence[dict], k: int) -> dict:
    """`labelled`: [{"query", "relevant": [document ids]}]. The misses are listed by query."""
    results = search([row["query"] for row in labelled], k)
    ranks = []
    for row, hits in zip(labelled, results):
        ids = [doc for doc, _ in hits][:k]
        ranks.append(next((i + 1 for i, doc in enumerate(ids) if doc in set(row["relevant"])), None))
    n = len(labelled) or 1
    return {
        f"recall_at_{k}": round(sum(1 for r in ranks if r) / n, 4),
        "recall_at_1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
        "queries": len(labelled),
        "misses": [row["query"] for row, r in zip(labelled, ranks) if r is None],
    }


def knowledge_index_asset(
    name: str,
    group: str,
    build: Callable[[], Any],
    search: Callable[[Any, list[str], int], Sequence[Sequence[tuple[str, float]]]],
    labelled: Callable[[], Sequence[dict]],
    k: int,
    threshold: float,
    freshness: Optional[dg.FreshnessPolicy] = None,
) -> dg.AssetsDefinition:
    """A knowledge base as an asset: `build()` makes the index (its `version`, when it has one,
    is the data version), and its check measures recall@k on the labelled queries."""
    check = f"{name}_recall_at_{k}"

    @dg.asset(
        name=name,
        group_name=group,
        freshness_policy=freshness,
        kinds={"bm25"},
        check_specs=[
            dg.AssetCheckSpec(check, asset=name, description=f"recall@{k} on the labelled queries >= {threshold}")
        ],
    )
    def _index():
        index = build()
        quality = retrieval_quality(lambda qs, n: search(index, qs, n), labelled(), k)
        version = getattr(index, "version", None)
        yield dg.Output(
            index,
            data_version=dg.DataVersion(version) if version else None,
            metadata={**{m: v for m, v in quality.items() if m != "misses"}, "misses": len(quality["misses"])},
        )
        yield dg.AssetCheckResult(
            check_name=check,
            passed=quality[f"recall_at_{k}"] >= threshold,
            metadata={"threshold": threshold, "misses": dg.MetadataValue.json(quality["misses"][:20])},
        )

    return _index
