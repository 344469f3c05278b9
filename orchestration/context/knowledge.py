"""Knowledge for any workflow's decisions: the questions a decision needs answered (each
asked when its fact holds), retrieval for a whole batch at once (cached by question), the
knowledge gaps as quality factors, and retrieval quality on a labelled set; the index as an
asset whose data version is its documents' hash, with its recall@k as an asset check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from orchestration.context.knowledge_index import KnowledgeIndex, documents_version
from orchestration.context.retrieval_quality import retrieval_quality as ranked_quality
from orchestration.context.sources import Snapshot, SourceReading
from orchestration.context.ttl_cache import TTLCache

# BM25 scores below this answer nothing (a workflow may set its own floor).
RELEVANCE_FLOOR = 1.5
KNOWLEDGE_GAP_PENALTY = 0.1
PASSAGES_PER_QUESTION = 3
# name -> (question, when it is asked: a predicate on the record's facts)
Questions = Mapping[str, tuple[str, Callable[[dict], bool]]]

# Same question, same index version: same answer. Shared by every run in the process.
retrieval_cache = TTLCache(ttl_s=3600.0)


def questions_for(facts: dict, questions: Questions) -> list[tuple[str, str]]:
    return [(name, q) for name, (q, needed) in questions.items() if needed(facts)]


def retrieve(index: KnowledgeIndex, questions: list[str], k: int = PASSAGES_PER_QUESTION, embed=None) -> list[list]:
    """Hits for each question; only questions not in the cache go to the index, in one call.
    If the embeddings endpoint fails, BM25 alone answers: retrieval degrades, never fails."""
    mode = index.embedding_model if (embed is not None and index.embedding_model) else "bm25"
    keys = [(index.version, mode, q, k) for q in questions]

    def search(missing):
        texts = [m[2] for m in missing]
        if mode == "bm25":
            return index.search_many(texts, k=k)
        try:
            return index.search_many(texts, k=k, embed=embed)
        except Exception:  # noqa: BLE001 - an unreachable embeddings endpoint must not stop decisions
            return index.search_many(texts, k=k)

    return retrieval_cache.get_many(keys, search)


def attach_knowledge(
    records: list[dict],
    index: KnowledgeIndex,
    questions: Questions,
    embed=None,
    floor: float = RELEVANCE_FLOOR,
    gap_penalty: float = KNOWLEDGE_GAP_PENALTY,
) -> dict:
    """Per record: the passages that answer its questions, and a gap for each question with
    no passage above the relevance floor. Returns the batch's gap counts."""
    asked = [questions_for(r["facts"], questions) for r in records]
    # Every record's questions go through the cache (so its hit rate is per lookup); only
    # questions not in it reach BM25, in one call for the batch.
    flat = [q for qs in asked for _, q in qs]
    answers = dict(zip(flat, retrieve(index, flat, embed=embed)))
    # Per question once: the passages above the floor, as shared JSON-ready dicts.
    answered = {
        q: [
            (
                {
                    "doc": p.doc,
                    "heading": p.heading,
                    "doc_version": p.doc_version,
                    "score": round(s, 3),
                    "text": p.text,
                },
                s,
            )
            for p, s in hits
            if s >= floor
        ]
        for q, hits in answers.items()
    }
    gaps: dict[str, int] = {}
    for r, qs in zip(records, asked):
        best: dict[tuple, tuple] = {}
        r_gaps = []
        for name, q in qs:
            hits = answered[q]
            if not hits:
                r_gaps.append(name)
                gaps[name] = gaps.get(name, 0) + 1
            for p, s in hits:
                ref = (p["doc"], p["heading"])
                if ref not in best or best[ref][1] < s:
                    best[ref] = (p, s, name)
        r["policy_passages"] = [{**p, "question": name} for p, s, name in sorted(best.values(), key=lambda t: -t[1])]
        r["knowledge"] = {"questions": [n for n, _ in qs], "gaps": r_gaps, "index_version": index.version}
        r.setdefault("quality_factors", []).extend(
            {
                "name": "knowledge_gap",
                "penalty": gap_penalty,
                "detail": f"no passage scores {floor} or more for {questions[g][0]!r}",
            }
            for g in r_gaps
        )
    return gaps


def load_labels(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def retrieval_quality(index: KnowledgeIndex, labels: list[dict], k: int = 5, embed=None) -> dict:
    """recall@k (share of questions whose relevant passage is in the top k) and MRR."""

    def search(queries: list[str], n: int) -> list[list[tuple[str, float]]]:
        return [[(p.ref, s) for p, s in hits] for hits in index.search_many(queries, k=n, embed=embed)]

    labelled = [{"query": row["query"], "relevant": [row["relevant"]]} for row in labels]
    return ranked_quality(search, labelled, k)


def embed_of(embeddings: Any) -> Optional[Callable]:
    """The embeddings resource's `embed`, when an endpoint is configured."""
    return embeddings.embed if embeddings is not None and embeddings.enabled else None


def build_index(documents: dict[str, str], embeddings: Any = None) -> KnowledgeIndex:
    embed = embed_of(embeddings)
    return KnowledgeIndex(documents, embed=embed, embedding_model=embeddings.model_name if embed else None)


_rebuilt: dict[tuple, KnowledgeIndex] = {}


def current_index(index: KnowledgeIndex, documents: Any, embeddings: Any = None) -> KnowledgeIndex:
    """The materialized index while the documents are unchanged; rebuilt (a few small files,
    milliseconds) when they changed since, so no decision reads a withdrawn document."""
    docs = documents.load()
    version = documents_version(docs)
    if version == index.version:
        return index
    key = (version, embeddings.model_name if embeddings is not None else "none")
    if key not in _rebuilt:  # once per process, not once per batch, until the asset catches up
        _rebuilt.clear()
        _rebuilt[key] = build_index(docs, embeddings)
    return _rebuilt[key]


def read_knowledge(
    sources: Any, index: KnowledgeIndex, documents: Any, embeddings: Any, as_of: Any, window: Any
) -> SourceReading:
    """A batch's knowledge source, read through `sources` (the context sources resource): the
    current index (`current_index`: rebuilt when the documents changed since the materialized
    `index`), else the materialized index as a snapshot taken `as_of`, judged by `window`."""
    return sources.read(
        "knowledge", lambda: current_index(index, documents, embeddings), Snapshot(index, as_of), window
    )


def build_knowledge_index_asset(
    name: str,
    group_name: str,
    labels: Path,
    recall_threshold: float,
    freshness_policy: Any = None,
    documents_key: str = "policy_documents",
    embeddings_key: str = "policy_embeddings",
    description: str = "",
):
    """`name`: a BM25 index over the documents resource's files, one entry per paragraph (plus
    their embeddings when an endpoint is configured). Its data version is the documents' hash,
    so an edited document means a new index; every passage carries its document's version.
    Its check: recall@5 on the labelled queries (`labels`) is at least `recall_threshold`."""
    import dagster as dg  # here: the retrieval above is used where Dagster is not loaded

    check = "retrieval_recall_at_5_meets_threshold"

    @dg.asset(
        name=name,
        group_name=group_name,
        freshness_policy=freshness_policy,
        kinds={"bm25"},
        required_resource_keys={documents_key, embeddings_key},
        description=description or f"BM25 index over the {documents_key} documents.",
        check_specs=[
            dg.AssetCheckSpec(
                check, asset=name, description=f"recall@5 on the labelled retrieval set is at least {recall_threshold}"
            )
        ],
    )
    def _index(context):
        embeddings = getattr(context.resources, embeddings_key)
        index = build_index(getattr(context.resources, documents_key).load(), embeddings)
        quality = retrieval_quality(index, load_labels(labels), embed=embed_of(embeddings))
        yield dg.Output(
            index,
            data_version=dg.DataVersion(index.version),
            metadata={
                "passages": len(index.passages),
                "version": index.version,
                "documents": dg.MetadataValue.json(index.document_versions),
                "retrieval": index.embedding_model and f"bm25+embeddings:{index.embedding_model}" or "bm25",
                **{k: quality[k] for k in ("recall_at_5", "recall_at_1", "mrr")},
                "labelled_queries": quality["queries"],
            },
        )
        yield dg.AssetCheckResult(
            check_name=check,
            passed=quality["recall_at_5"] >= recall_threshold,
            metadata={
                "recall_at_5": quality["recall_at_5"],
                "mrr": quality["mrr"],
                "threshold": recall_threshold,
                "misses": dg.MetadataValue.json(quality["misses"]),
            },
        )

    return _index
