"""Model routing: the cheapest model that is good enough, within the day's budget.

Every workflow's decisions start on the local model (free, in-process, one call per
batch). A decision goes to the LLM when a rule forces it for its decision type, or when
the local confidence is below the workflow's routing threshold, and only if an LLM is
configured. The LLM call goes through the response cache and the daily budget
(`llm_ledger`); a spent budget or an endpoint that keeps failing routes the rest of the
batch to the workflow's fallback (the local model or escalation) instead of failing.

The router knows nothing about the chat client: the caller hands it a function that asks
one question and returns an `LLMAnswer`, so any model resource fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from orchestration.decision.llm_ledger import LLMLedger, cache_key, today
from orchestration.decision.pricing import PriceTable

Fallback = Literal["local", "escalate"]


class RoutingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(ge=0, le=1)  # below this local confidence, ask the LLM
    force: dict[str, Literal["local", "llm"]] = {}  # decision type -> model, whatever the confidence
    daily_token_budget: Optional[int] = Field(default=None, ge=0)
    daily_cost_budget: Optional[float] = Field(default=None, ge=0)
    when_budget_spent: Fallback = "local"
    when_llm_unavailable: Fallback = "local"
    # After this many endpoint failures in a row, the batch stops calling: a hung or
    # down endpoint costs a few timeouts per batch, not one per decision.
    max_consecutive_failures: int = Field(default=3, ge=1)
    expected_output_tokens: int = Field(default=120, ge=1)


@dataclass(frozen=True)
class LLMAnswer:
    """One question's answer as the chat client gave it."""

    value: Optional[dict]
    no_result_reason: Optional[str]
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    unavailable: bool = False  # the endpoint failed (HTTP/timeout), as opposed to answering badly


@dataclass(frozen=True)
class Question:
    key: str
    messages: list[dict]
    inputs: object  # what the answer depends on besides the prompt version and model (hashed)


@dataclass
class Routed:
    """What the router did for one question."""

    status: Literal["answered", "cached", "no_result", "budget_spent", "llm_unavailable"]
    value: Optional[dict] = None
    reason: Optional[str] = None
    model: str = "local"
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    cache_key: Optional[str] = None

    @property
    def fallback_needed(self) -> bool:
        return self.status in ("budget_spent", "llm_unavailable")


@dataclass
class BatchSpend:
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    budget_refusals: int = 0
    unavailable: int = 0
    by_status: dict = field(default_factory=dict)


def estimate_tokens(messages: list[dict]) -> int:
    # About four characters a token; an estimate for the reservation only, settled later.
    return max(1, sum(len(str(m.get("content", ""))) for m in messages) // 4)


class Router:
    def __init__(
        self,
        workflow: str,
        policy: RoutingPolicy,
        prices: PriceTable,
        ledger: Optional[LLMLedger],
        llm_model: Optional[str],
        prompt_version: Optional[str],
    ):
        self.workflow, self.policy, self.prices, self.ledger = workflow, policy, prices, ledger
        self.llm_model, self.prompt_version = llm_model, prompt_version
        self.spend = BatchSpend()
        # Kept across `ask` calls: a decision loop asks again in later passes of the same
        # batch, and an endpoint that failed in the first pass must not be called anew.
        self.failures_in_row = 0

    def wants_llm(self, decision_type: str, local_confidence: float) -> tuple[bool, str]:
        forced = self.policy.force.get(decision_type)
        if forced == "local":
            return False, f"rule: {decision_type} -> local"
        if self.llm_model is None:
            return False, "no LLM configured"
        if forced == "llm":
            return True, f"rule: {decision_type} -> llm"
        if local_confidence < self.policy.threshold:
            return True, f"local confidence {local_confidence:.2f} < {self.policy.threshold}"
        return False, f"local confidence {local_confidence:.2f} >= {self.policy.threshold}"

    def ask(self, questions: list[Question], call: Callable[[Question], LLMAnswer]) -> list[Routed]:
        """Answers in the order asked; never raises for what the endpoint or the budget does."""
        assert self.llm_model is not None and self.prompt_version is not None
        keys = [cache_key(self.prompt_version, self.llm_model, q.inputs) for q in questions]
        hits = self.ledger.cached(keys) if self.ledger else {}
        day = today()
        out: list[Routed] = []
        to_remember: list[dict] = []
        token_delta, cost_delta = 0, 0.0
        for q, key in zip(questions, keys):
            if key in hits:
                started = time.perf_counter()
                out.append(
                    Routed(
                        "cached",
                        value=hits[key],
                        model=self.llm_model,
                        cache_key=key,
                        latency_s=time.perf_counter() - started,
                    )
                )
                self.spend.cache_hits += 1
                continue
            if self.failures_in_row >= self.policy.max_consecutive_failures:
                out.append(
                    Routed(
                        "llm_unavailable",
                        reason=f"LLM failed {self.failures_in_row} times in a row; not called for the rest of the batch",
                        cache_key=key,
                    )
                )
                continue
            est_in = estimate_tokens(q.messages)
            est_out = self.policy.expected_output_tokens
            est_cost = self.prices.cost(self.llm_model, est_in, est_out)
            if self.ledger is not None and not self.ledger.reserve(
                self.workflow,
                est_in + est_out,
                est_cost,
                self.policy.daily_token_budget,
                self.policy.daily_cost_budget,
                day,
            ):
                out.append(Routed("budget_spent", reason="daily LLM budget spent", cache_key=key))
                self.spend.budget_refusals += 1
                continue
            answer = call(q)
            cost = self.prices.cost(answer.model or self.llm_model, answer.input_tokens, answer.output_tokens)
            token_delta += answer.input_tokens + answer.output_tokens - (est_in + est_out)
            cost_delta += cost - est_cost
            self.spend.calls += 1
            self.spend.input_tokens += answer.input_tokens
            self.spend.output_tokens += answer.output_tokens
            self.spend.cost += cost
            common = dict(
                model=answer.model or self.llm_model,
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
                cost=cost,
                latency_s=answer.latency_s,
                cache_key=key,
            )
            if answer.value is not None:
                self.failures_in_row = 0
                out.append(Routed("answered", value=answer.value, **common))
                to_remember.append(
                    {
                        "cache_key": key,
                        "prompt_version": self.prompt_version,
                        "model": self.llm_model,
                        "answer": answer.value,
                    }
                )
            elif answer.unavailable:
                self.failures_in_row += 1
                self.spend.unavailable += 1
                out.append(Routed("llm_unavailable", reason=answer.no_result_reason, **common))
            else:
                self.failures_in_row = 0
                out.append(Routed("no_result", reason=answer.no_result_reason, **common))
        if self.ledger is not None:
            self.ledger.settle(self.workflow, token_delta, cost_delta, day)
            self.ledger.remember(self.workflow, to_remember)
        for r in out:
            self.spend.by_status[r.status] = self.spend.by_status.get(r.status, 0) + 1
        return out


def budget_from_env(workflow: str, policy: RoutingPolicy) -> RoutingPolicy:
    """The daily budget from BOSUN_<WORKFLOW>_LLM_DAILY_TOKENS / _LLM_DAILY_COST (USD),
    read per batch so a change applies without a redeploy; unset keeps the policy's."""
    import os

    prefix = f"BOSUN_{workflow.upper()}_LLM_DAILY_"
    update: dict = {}
    if os.environ.get(prefix + "TOKENS"):
        update["daily_token_budget"] = int(os.environ[prefix + "TOKENS"])
    if os.environ.get(prefix + "COST"):
        update["daily_cost_budget"] = float(os.environ[prefix + "COST"])
    return policy.model_copy(update=update) if update else policy
