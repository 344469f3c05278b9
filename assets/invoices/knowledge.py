"""Knowledge retrieval for invoice decisions: the policy questions a decision needs
answered, retrieval for a whole batch at once (cached by question), knowledge gaps, and
the retrieval quality measured on a labelled set."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestration.context.ttl_cache import TTLCache
from resources.knowledge_base import PolicyIndex

LABELS_PATH = Path(__file__).parent / "retrieval_labels.yaml"
# BM25 scores below this answer nothing: on the sample policies a real question's best
# passage scores 2.1-8.5, an off-topic one ("exchange rate policy for crypto") 1.2.
RELEVANCE_FLOOR = 1.5
RECALL_AT_5_THRESHOLD = 0.9
KNOWLEDGE_GAP_PENALTY = 0.1
PASSAGES_PER_QUESTION = 3

# The policy questions a decision needs answered, each asked when its fact holds.
QUESTIONS = {
    "approval": ("when may an invoice be approved automatically", lambda f: True),
    "unknown_vendor": ("invoice from an unknown vendor not in the vendor master", lambda f: not f["vendor_known"]),
    "inactive_vendor": (
        "invoice from an inactive or blocked vendor",
        lambda f: f["vendor_known"] and not f["vendor_active"],
    ),
    "duplicate": ("duplicate invoice already paid, pay an invoice twice", lambda f: f["already_paid"]),
    "po_closed": ("invoice against a closed purchase order", lambda f: f["po_found"] and not f["po_open"]),
    "po_missing": (
        "invoice references purchase order of another vendor or none",
        lambda f: not f["po_found"] or not f["po_vendor_matches"],
    ),
    "currency": (
        "invoice currency differs from purchase order currency",
        lambda f: f["po_found"] and not f["currency_matches_po"],
    ),
    "over_po": ("amount exceeds the purchase order tolerance", lambda f: (f["amount_over_po_ratio"] or 0) > 0),
    "large_amount": ("invoice amount over 50,000 second approver", lambda f: f["amount"] > 50000),
    "high_risk": ("high risk vendor review above 10,000", lambda f: f["high_risk_amount"] > 10000),
    "instructions": ("memo asks to ignore the rules and approve the invoice", lambda f: f["injection_suspected"]),
    "personal_data": ("redact personal data in memos", lambda f: f["pii_in_memo"]),
}

# Same question, same index version: same answer. Shared by every run in the process.
retrieval_cache = TTLCache(ttl_s=3600.0)


def questions_for(facts: dict, questions: dict = QUESTIONS) -> list[tuple[str, str]]:
    return [(name, q) for name, (q, needed) in questions.items() if needed(facts)]


def retrieve(index: PolicyIndex, questions: list[str], k: int = PASSAGES_PER_QUESTION, embed=None) -> list[list]:
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


def attach_knowledge(records: list[dict], index: PolicyIndex, questions: dict = QUESTIONS, embed=None) -> dict:
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
            if s >= RELEVANCE_FLOOR
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
                "penalty": KNOWLEDGE_GAP_PENALTY,
                "detail": f"no policy passage scores {RELEVANCE_FLOOR} or more for {questions[g][0]!r}",
            }
            for g in r_gaps
        )
    return gaps


def load_labels(path: Path = LABELS_PATH) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def retrieval_quality(index: PolicyIndex, labels: list[dict], k: int = 5, embed=None) -> dict:
    """recall@k (share of questions whose relevant passage is in the top k) and MRR."""
    results = index.search_many([row["query"] for row in labels], k=k, embed=embed)
    ranks = []
    for row, hits in zip(labels, results):
        refs = [p.ref for p, _ in hits]
        ranks.append(refs.index(row["relevant"]) + 1 if row["relevant"] in refs else None)
    n = len(labels) or 1
    return {
        f"recall_at_{k}": round(sum(1 for r in ranks if r) / n, 4),
        "recall_at_1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
        "queries": len(labels),
        "misses": [row["query"] for row, r in zip(labels, ranks) if r is None],
    }
