"""The LLM's part of any workflow's `reason` hook, around the router: which proposals go to
the LLM (by the routing policy, or forced by the loop), one question each through the router,
and each answer's model, versions and cost written onto its proposal. Any chat resource with
`complete(messages, output_model)` answering an `LLMResult`-shaped object fits."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from pydantic import BaseModel

from orchestration.decision.routing import LLMAnswer, Question, Routed, Router

# What a local proposal costs: nothing, and no cache was involved.
LOCAL_COSTS = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "latency_s": 0.0, "cache_hit": False}


def chat_answer(llm: Any, output_model: type[BaseModel]) -> Callable[[Question], LLMAnswer]:
    def call(q: Question) -> LLMAnswer:
        r = llm.complete(q.messages, output_model)
        return LLMAnswer(
            value=r.value.model_dump() if r.value is not None else None,
            no_result_reason=r.no_result_reason,
            model=r.model,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            latency_s=r.latency_s,
            attempts=r.attempts,
            unavailable=r.unavailable,
        )

    return call


def for_the_llm(router: Router, proposals: Sequence[dict], kinds: Sequence[str], forced: Sequence[bool]) -> list[int]:
    """The proposals to ask the LLM about, each with its `route_reason`: the routing policy's
    choice by decision kind and local confidence, or `forced` (the loop asks again after
    re-reading) unless the policy keeps that kind local or no LLM is configured."""
    chosen = []
    for i, (p, kind, force) in enumerate(zip(proposals, kinds, forced)):
        wants, why = router.wants_llm(kind, p["probability"])
        if force and router.llm_model is not None and router.policy.force.get(kind) != "local":
            wants, why = True, "asked the LLM after a broader re-read"
        p["route_reason"] = why
        if wants:
            chosen.append(i)
    return chosen


def answer_onto(p: dict, r: Routed, prompt_version: str) -> Optional[dict]:
    """The routed answer's cost (always) and model and versions (when it answered) on the
    proposal; the answer, or None when the local proposal stands (and `route_reason` says why)."""
    p.update(input_tokens=r.input_tokens, output_tokens=r.output_tokens, cost_usd=round(r.cost, 8))
    p["latency_s"] = round(p.get("latency_s", 0.0) + r.latency_s, 6)
    if r.value is None:
        p["route_reason"] += f"; LLM: {r.reason or r.status}; the local proposal stands"
        return None
    p.update(model=r.model, model_version=r.model, prompt_version=prompt_version, cache_hit=r.status == "cached")
    return r.value


def spend_figures(router: Router) -> dict:
    s = router.spend
    return {"llm_calls": s.calls, "llm_cache_hits": s.cache_hits, "llm_cost_usd": round(s.cost, 6)}
