"""Context within a token budget, conflicts by declared rule, the TTL cache, token counting."""

from datetime import datetime, timedelta, timezone

import pytest

from orchestration.context.assembly import ContextItem, assemble_many
from orchestration.context.conflicts import Claim, ConflictRule, quality_factor, resolve
from orchestration.context.tokens import ApproximateCounter, counter_for
from orchestration.context.ttl_cache import TTLCache

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead


def _items():
    return [
        ContextItem("header", "event", {"id": "INV-1", "amount": "10.00"}, required=True, importance=1),
        ContextItem("passage-a", "kb", "alpha " * 60, relevance=1.0, importance=0.7, summary="alpha."),
        ContextItem("passage-b", "kb", "beta " * 60, relevance=0.5, importance=0.7),
        ContextItem("memo", "event", "thanks", relevance=0.0, importance=0.3),
    ]


def test_items_are_ranked_kept_summarised_or_dropped_with_reasons_within_budget():
    counter = ApproximateCounter()
    [a] = assemble_many([_items()], budget=60, counter=counter, min_score=0.05)
    assert a.within_budget and a.tokens <= 60
    kept = {k["item"]: k for k in a.kept}
    dropped = {d["item"]: d for d in a.dropped}
    assert kept["header"]["form"] == "full"
    assert kept["passage-a"]["form"] == "summary" and kept["passage-a"]["reason"].startswith("summarised")
    assert dropped["passage-b"]["reason"].startswith("over budget")
    assert dropped["memo"]["reason"].startswith("low value")
    assert a.tokens == sum(k["tokens"] for k in a.kept)
    [again] = assemble_many([_items()], budget=60, counter=counter, min_score=0.05)
    assert again.hash == a.hash
    [bigger] = assemble_many([_items()], budget=400, counter=counter)
    assert {k["item"]: k["form"] for k in bigger.kept}["passage-a"] == "full" and bigger.hash != a.hash


def test_a_required_item_is_kept_over_budget_and_flagged():
    [a] = assemble_many([_items()[:1]], budget=2, counter=ApproximateCounter())
    assert not a.within_budget and a.kept[0]["reason"] == "required, over budget"


def test_tiktoken_counts_offline_with_the_bundled_encoding():
    counter = counter_for("gpt-4o")  # o200k_base cannot be downloaded here: falls back to cl100k
    assert counter.name.startswith("tiktoken:cl100k_base")
    assert counter.count_many(["hello world", "hello world"]) == [2, 2]
    approx = ApproximateCounter()
    text = '{"invoice_id":"INV-0000042","amount":"1250.00"} Invoices over 50,000 need a second approver.'
    assert approx.count(text) >= counter.count(text)  # the approximation never under-counts here


def test_conflicts_are_resolved_by_the_declared_rule():
    now = datetime.now(timezone.utc)
    recency = resolve(
        ConflictRule("vendor.active", "recency"),
        [Claim("live", False, now), Claim("snapshot", True, now - timedelta(hours=3))],
    )
    assert recency["resolved"] and recency["chosen_source"] == "live" and recency["value"] is False
    priority = resolve(
        ConflictRule("iban", "source_priority", priority=("erp", "memo")), [Claim("memo", "X"), Claim("erp", "Y")]
    )
    assert priority["chosen_source"] == "erp"
    rule = ConflictRule("amount", "must_agree", tolerance=0.01, penalty=0.3)
    assert resolve(rule, [Claim("header", 100.0), Claim("lines", 100.005)]) is None
    unresolved = resolve(rule, [Claim("header", 100.0), Claim("lines", 90.0)])
    assert not unresolved["resolved"]
    assert quality_factor(unresolved, rule) == {
        "name": "unresolved_conflict:amount",
        "penalty": 0.3,
        "detail": "must_agree cannot choose between header=100.0, lines=90.0",
    }


def test_the_ttl_cache_computes_each_missing_key_once_and_expires():
    now = [0.0]
    cache = TTLCache(ttl_s=10, clock=lambda: now[0])
    computed = []

    def compute(keys):
        computed.extend(keys)
        return [k.upper() for k in keys]

    assert cache.get_many(["a", "b", "a"], compute) == ["A", "B", "A"]
    assert cache.get_many(["a", "b"], compute) == ["A", "B"]
    assert computed == ["a", "b"] and cache.stats() == {"hits": 3, "misses": 2, "hit_rate": 0.6}
    now[0] = 11
    cache.get_many(["a"], compute)
    assert computed == ["a", "b", "a"]


def test_more_context_keeps_broader_passages_only_when_they_speak_better_and_else_answers_none():
    from orchestration.context.knowledge_index import KnowledgeIndex
    from orchestration.context.more_context import MoreContext, Rereading

    index = KnowledgeIndex({"refunds.md": "# Refunds\n\n## Over 100\n\nRefunds over 100 need a second approver.\n"})
    reassembled = []
    rereading = Rereading(
        query=lambda r: r["text"],
        weakness=lambda passages: 1.0 - max((p["score"] for p in passages or []), default=0.0) / 10,
        reassemble=reassembled.extend,
        reread=lambda records: [r["text"] == "stale" for r in records],
    )
    contexts = [
        {"key": "a", "text": "refunds over 100 second approver", "policy_passages": []},
        {"key": "b", "text": "stale", "policy_passages": [{"doc": "x", "heading": "y", "score": 99.0}]},
        {"key": "c", "text": "weather", "policy_passages": [{"doc": "x", "heading": "y", "score": 99.0}]},
    ]
    a, b, c = MoreContext(rereading, lambda: index)(contexts, [{}, {}, {}])
    assert a["policy_passages"][0]["doc"] == "refunds.md" and a["knowledge"] == {"broader_query": True}
    assert a["sources"]["knowledge"]["status"] == "live" and b["policy_passages"][0]["doc"] == "x" and c is None
    assert [r["key"] for r in reassembled] == ["a", "b"] and contexts[0][
        "policy_passages"
    ] == []  # copies, not the batch's
