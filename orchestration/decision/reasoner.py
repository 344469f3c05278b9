"""The `reason` hook of the decision loop for any workflow with a local model and an LLM: the
local model on every context of a pass, the LLM through one router for the batch (so its
budget, cache and failure count span every pass) for the contexts the router sends there,
and the LLM asked again, told the rule, when a hard rule refused its answer.

A workflow declares in a `ReasonerSpec` what only it knows: its model's features, the kind of
each decision (for the routing rules), what a proposal carries of its context, the prompt's
values, and how a refusal is told to the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from orchestration.decision.llm_calls import chat_answer
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.loop import PassRequest, RuleFeedback
from orchestration.decision.pricing import price_table
from orchestration.decision.prompts import Prompt, load_prompt
from orchestration.decision.routing import LLMAnswer, Question, Router, RoutingPolicy, budget_from_env


def rule_statement(feedback: RuleFeedback, what: str = "case", policy: str = "policy", asking: str = "") -> str:
    """A refused answer, told to the model the way the team's lead would say it; `asking`: what
    the new answer must also do (e.g. "stating the amount")."""
    rules = "\n".join(
        f"- {r.name}: {r.description or f'a hard rule of the {policy}'} (the {policy}'s own answer: {r.then})"
        for r in feedback.rules
    )
    return (
        f"Your previous answer ({', '.join(feedback.refused)}) breaks the {policy} for this {what}:\n"
        f"{rules}\n"
        f"The policy allows only: {', '.join(feedback.allowed)}. Decide again within it{', ' if asking else ''}{asking}."
        " The policy is checked again after you answer."
    )


@dataclass(frozen=True)
class ReasonerSpec:
    workflow: str
    model_name: str  # the local model's name in the model store
    routing: RoutingPolicy
    prompt_path: Path
    features: Callable[[dict], Mapping[str, float]]  # a context -> the local model's features
    decision_type: Callable[[dict], str]  # a context's facts -> its kind, for the routing rules
    carry: Callable[[dict], dict]  # a context -> what its proposal carries (facts, payload, context_used)
    prompt_values: Callable[[dict], Mapping[str, str]]  # a context -> the prompt's values (besides policy, facts)
    statement: Callable[[RuleFeedback], str] = rule_statement
    answer_fields: Callable[[dict], dict] = field(default=lambda value: {})  # an LLM answer -> proposal fields


def kept_passages(context: dict) -> str:
    """The knowledge passages the assembly kept within the token budget, as the model reads them."""
    kept = {k["item"] for k in context.get("assembly", {}).get("kept", [])}
    passages = context.get("policy_passages", [])
    if kept:
        passages = [p for p in passages if f"policy:{p['doc']}#{p['heading']}" in kept]
    return "\n\n".join(f"{p['doc']} / {p['heading']}: {p.get('text', '')}".rstrip(": ") for p in passages)


def context_provenance(c: dict) -> dict:
    """What a decision was made from, as its record keeps it (`bosun explain` shows it, a replay
    rebuilds the context from it: orchestration/audit/replay.py): each source's state and age,
    the conflicts and quality factors, the knowledge passages without their text, the assembled
    document's items kept and dropped, and which untrusted fields held personal data or were
    quarantined (paths, never text)."""
    return {
        "guarded": c.get("guarded", {}),
        "policy_passages": [{k: v for k, v in p.items() if k != "text"} for p in c.get("policy_passages", [])],
        "sources": c.get("sources", {}),
        "conflicts": c.get("conflicts", []),
        "quality_factors": c.get("quality_factors", []),
        "knowledge": c.get("knowledge", {}),
        "assembly": {k: v for k, v in c.get("assembly", {}).items() if k != "document"},
    }


class Reasoner:
    """One batch's `reason` hook. `routing` replaces the workflow's policy (benchmarks compare
    policies), `prompt` the live prompt (replay)."""

    def __init__(
        self,
        spec: ReasonerSpec,
        local_model: Any,
        llm: Any,
        ledger: Optional[LLMLedger] = None,
        routing: Optional[RoutingPolicy] = None,
        prompt: Optional[Prompt] = None,
    ):
        self.spec, self.local_model, self.llm = spec, local_model, llm
        self.prompt = prompt or load_prompt(spec.prompt_path)
        self.routing = budget_from_env(spec.workflow, routing or spec.routing)
        self.router = Router(
            spec.workflow,
            self.routing,
            price_table(),
            ledger,
            (getattr(llm, "model_name", None) or "llm") if llm.enabled else None,
            self.prompt.version,
        )
        self.routed_to_llm = 0

    def reason(self, requests: Sequence[PassRequest]) -> list[Optional[dict]]:
        """A proposal per request. After a hard rule refused, only a model that reads the rule
        can answer otherwise: the LLM is asked again with the rule stated; the local model,
        asked the same facts, would answer the same, so the rule's outcome stands (None)."""
        out: list[Optional[dict]] = [None] * len(requests)
        asked = [
            i
            for i, r in enumerate(requests)
            if not r.after_rule or (r.previous is not None and r.previous["model"] != "local")
        ]
        made = self.propose(
            [requests[i].item for i in asked],
            [requests[i].feedback for i in asked],
            [requests[i].after_rule for i in asked],
        )
        for i, p in zip(asked, made):
            out[i] = p
        return out

    def propose(
        self,
        contexts: Sequence[dict],
        feedback: Optional[Sequence[Optional[RuleFeedback]]] = None,
        after_rule: Optional[Sequence[bool]] = None,
    ) -> list[dict]:
        if not contexts:
            return []
        feedback = feedback or [None] * len(contexts)
        after_rule = after_rule or [False] * len(contexts)
        started = time.perf_counter()
        preds = self.local_model.predict(self.spec.model_name, [self.spec.features(c) for c in contexts])
        per_item = (time.perf_counter() - started) / max(1, len(contexts))
        proposals = [
            self._local_proposal(c, label, probs, preds, per_item)
            for c, label, probs in zip(contexts, preds.labels, preds.probabilities)
        ]
        chosen = []
        for c, p, hint, rule_pass in zip(contexts, proposals, feedback, after_rule):
            wants, why = self.router.wants_llm(p["decision_type"], p["probability"])
            if rule_pass and self.routing.force.get(p["decision_type"]) != "local" and self.llm.enabled:
                # The LLM answered, a hard rule refused it: it is asked again, told the rule.
                wants, why = True, f"asked again: {', '.join(hint.names) if hint else 'rule'} violated"
            p["route_reason"] = why
            if hint is not None:
                p["rules_stated"] = list(hint.names)
            if wants:
                chosen.append((c, p, hint))
        if chosen:
            self.routed_to_llm += len(chosen)
            questions = [self._question(c, hint) for c, _, hint in chosen]
            answers = self.router.ask(questions, self._call)
            for (_, p, _), r in zip(chosen, answers):
                self._apply(p, r)
        return proposals

    def figures(self) -> dict:
        s = self.router.spend
        return {
            "llm_calls": s.calls,
            "llm_cache_hits": s.cache_hits,
            "llm_cost_usd": round(s.cost, 6),
            "llm_budget_refusals": s.budget_refusals,
            "llm_unavailable": s.unavailable,
            "routed_to_llm": self.routed_to_llm,
            "prompt_version": self.prompt.version,
        }

    def _local_proposal(self, c: dict, label: str, probs, preds, per_item: float) -> dict:
        probability = float(probs.max())
        return {
            "key": c["key"],
            "entity_key": c["entity_key"],
            "context_hash": c["context_hash"],
            "event": c["event"],
            **self.spec.carry(c),
            "decision": label,
            "probability": probability,
            "model": "local",
            "model_version": preds.model_version,
            "prompt_version": None,
            "probabilities": dict(zip(preds.classes, map(float, probs))),
            "local": {"decision": label, "probability": probability},
            "decision_type": self.spec.decision_type(c["facts"]),
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "latency_s": round(per_item, 6),
            "cache_hit": False,
            # The context layer's contract: [{"name", "penalty", "detail"}] per record.
            "quality_factors": c.get("quality_factors", []),
        }

    def _question(self, c: dict, feedback: Optional[RuleFeedback] = None) -> Question:
        values = {
            "policy": kept_passages(c) or "none found",
            "facts": json.dumps(c["facts"], sort_keys=True, default=str),
            **self.spec.prompt_values(c),
        }
        # The rendered prompt is exactly what the answer depends on (untrusted fields already guarded).
        text = self.prompt.render(**values)
        messages = [{"role": "user", "content": text}]
        if feedback is not None:
            # A second message, so the prompt (and its version) stays the one the first pass used.
            messages.append({"role": "user", "content": self.spec.statement(feedback)})
        inputs = text if feedback is None else [m["content"] for m in messages]
        return Question(key=c["key"], messages=messages, inputs=inputs)

    def _call(self, q: Question) -> LLMAnswer:
        return chat_answer(self.llm, self.prompt.output_model)(q)

    def _apply(self, p: dict, r) -> None:
        p.update(
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cost_usd=round(r.cost, 8),
            latency_s=round(p["latency_s"] + r.latency_s, 6),
            llm_status=r.status,
        )
        if r.fallback_needed:
            fallback = (
                self.routing.when_budget_spent if r.status == "budget_spent" else self.routing.when_llm_unavailable
            )
            p["route_reason"] += f"; {r.reason}; fell back to {fallback}"
            if fallback == "escalate":
                p.update(decision="no_result", probability=0.0, no_result_reason=r.reason)
            return
        p.update(
            model=r.model, model_version=r.model, prompt_version=self.prompt.version, cache_hit=r.status == "cached"
        )
        if r.value is None:
            p.update(decision="no_result", probability=0.0, no_result_reason=r.reason)
        else:
            p.update(
                decision=r.value["decision"],
                probability=float(r.value["confidence"]),
                llm_reason=r.value["reason"],
                **self.spec.answer_fields(r.value),
            )
