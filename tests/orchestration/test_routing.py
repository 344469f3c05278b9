"""The router, the response cache and the daily budget (SQLite and Postgres)."""

import threading
from datetime import date

import pytest

from orchestration.decision.llm_ledger import LLMLedger, cache_key
from orchestration.decision.pricing import price_table
from orchestration.decision.routing import LLMAnswer, Question, Router, RoutingPolicy


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return LLMLedger(url)


def test_reservations_never_exceed_the_budget_under_concurrency(ledger):
    day = date(2026, 11, 24)
    results = []

    def reserve():
        results.append(ledger.reserve("wf", 100, 0.01, max_tokens=1000, max_cost=None, day=day))

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 10
    assert ledger.spend("wf", day).tokens == 1000
    assert not ledger.reserve("wf", 0, 0.2, max_tokens=None, max_cost=0.1, day=day)  # cost limit too
    ledger.settle("wf", -500, 0.0, day)
    assert ledger.reserve("wf", 100, 0.01, max_tokens=1000, max_cost=None, day=day)
    assert ledger.spend("other", day).calls == 0


def test_cache_is_keyed_by_prompt_version_model_and_inputs(ledger):
    k = cache_key("p-1", "m", "question")
    assert k != cache_key("p-2", "m", "question") != cache_key("p-1", "m2", "question")
    ledger.remember("wf", [{"cache_key": k, "prompt_version": "p-1", "model": "m", "answer": {"a": 1}}])
    ledger.remember("wf", [{"cache_key": k, "prompt_version": "p-1", "model": "m", "answer": {"a": 2}}])
    assert ledger.cached([k, "missing"]) == {k: {"a": 1}}


def _q(i):
    return Question(key=str(i), messages=[{"role": "user", "content": "x" * 400}], inputs=f"q{i}")


def test_router_rules_threshold_and_no_llm():
    policy = RoutingPolicy(threshold=0.8, force={"quarantined": "local", "big": "llm"})
    router = Router("wf", policy, price_table(), None, "gpt-4o-mini", "p-1")
    assert router.wants_llm("standard", 0.5)[0] and not router.wants_llm("standard", 0.95)[0]
    assert router.wants_llm("big", 0.99)[0] and not router.wants_llm("quarantined", 0.1)[0]
    assert not Router("wf", policy, price_table(), None, None, "p-1").wants_llm("big", 0.1)[0]


def test_router_caches_charges_and_falls_back_when_the_budget_is_spent(tmp_path):
    ledger = LLMLedger(f"sqlite:///{tmp_path / 'l.db'}")
    policy = RoutingPolicy(threshold=0.8, daily_token_budget=500)
    calls = []

    def call(q):
        calls.append(q.key)
        return LLMAnswer({"ok": q.key}, None, "gpt-4o-mini", input_tokens=100, output_tokens=20, latency_s=0.01)

    first = Router("wf", policy, price_table(), ledger, "gpt-4o-mini", "p-1").ask([_q(1), _q(2), _q(3)], call)
    # Each estimate is 100 + 120 tokens: two fit in 500, the third is refused, not failed.
    assert [r.status for r in first] == ["answered", "answered", "budget_spent"]
    assert first[0].cost == pytest.approx(price_table().cost("gpt-4o-mini", 100, 20))
    assert ledger.spend("wf").tokens == 240  # settled to what was used
    again = Router("wf", policy, price_table(), ledger, "gpt-4o-mini", "p-1").ask([_q(1), _q(3)], call)
    assert [r.status for r in again] == ["cached", "answered"] and calls == ["1", "2", "3"]
    assert again[0].value == {"ok": "1"} and again[0].cost == 0


def test_router_stops_calling_an_endpoint_that_keeps_failing():
    policy = RoutingPolicy(threshold=0.8, max_consecutive_failures=2)
    calls = []

    def call(q):
        calls.append(q.key)
        return LLMAnswer(None, "APITimeoutError", "m", unavailable=True)

    out = Router("wf", policy, price_table(), None, "m", "p").ask([_q(i) for i in range(5)], call)
    assert len(calls) == 2 and all(r.status == "llm_unavailable" for r in out)


def test_unknown_models_are_charged_the_default_price():
    t = price_table()
    assert t.cost("no-such-model", 1000, 1000) == t.default.input_per_1k + t.default.output_per_1k > 0
    assert t.cost("local", 10_000, 10_000) == 0
