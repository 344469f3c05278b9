"""Proposals for a batch of invoices: the local model on the whole batch, the LLM through
the router for the few it is unsure of (or a routing rule sends there), and the LLM asked
again, told the rule, when a hard rule refused its answer (the decision loop's `reason`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from assets.invoices.context import model_features
from assets.invoices.workflow import MODEL_NAME, ROUTING, WORKFLOW
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.loop import PassRequest, RuleFeedback
from orchestration.decision.pricing import price_table
from orchestration.decision.prompts import Prompt, load_prompt
from orchestration.decision.routing import LLMAnswer, Question, Router, RoutingPolicy, budget_from_env
from resources.chat_model import ChatModel
from resources.local_model import LocalModel

PROMPT_PATH = Path(__file__).parent / "prompts" / "decide_invoice.yaml"


def decision_prompt() -> Prompt:
    return load_prompt(PROMPT_PATH)


def prompt_versions() -> dict[str, Prompt]:
    """Every version of the decision prompt in prompts/ (the live one and candidates such as
    `decide_invoice.cautious.yaml`), by version and by file name, for `bosun replay`."""
    out: dict[str, Prompt] = {}
    for path in sorted(PROMPT_PATH.parent.glob("*.yaml")):
        prompt = load_prompt(path)
        if prompt.name == decision_prompt().name:
            out[prompt.version] = out[path.name.removesuffix(".yaml")] = prompt
    return out


def decision_type(facts: dict) -> str:
    """What kind of decision this is, for the routing rules in workflow.ROUTING."""
    if facts["injection_suspected"]:
        return "quarantined_text"
    if facts["amount"] > 50_000:
        return "large_amount"
    return "standard"


class Reasoner:
    """The invoice workflow's `reason` hook for one batch: the local model on every context of
    a pass, the LLM through one router for the batch (so its budget, cache and failure count
    span every pass). `routing` replaces the workflow's policy (benchmarks compare policies),
    `prompt` the live prompt (replay)."""

    def __init__(
        self,
        local_model: LocalModel,
        llm: ChatModel,
        ledger: Optional[LLMLedger] = None,
        routing: Optional[RoutingPolicy] = None,
        prompt: Optional[Prompt] = None,
    ):
        self.local_model, self.llm = local_model, llm
        self.prompt = prompt or decision_prompt()
        self.routing = budget_from_env(WORKFLOW, routing or ROUTING)
        self.router = Router(
            WORKFLOW,
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
        preds = self.local_model.predict(MODEL_NAME, [model_features(c["facts"]) for c in contexts])
        per_item = (time.perf_counter() - started) / max(1, len(contexts))
        proposals = [
            _local_proposal(c, label, probs, preds, per_item)
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
            questions = [_question(self.prompt, c, hint) for c, _, hint in chosen]
            answers = self.router.ask(questions, lambda q: _call(self.llm, self.prompt, q))
            for (_, p, _), r in zip(chosen, answers):
                _apply(p, r, self.prompt.version, self.routing)
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


def propose(
    contexts: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    ledger: Optional[LLMLedger] = None,
    routing: Optional[RoutingPolicy] = None,
    prompt: Optional[Prompt] = None,
) -> tuple[list[dict], dict]:
    """One first-pass proposal per context, and the batch's routing figures (no loop: the
    calibration and the tests of the router read what a model says, before any rule)."""
    reasoner = Reasoner(local_model, llm, ledger, routing, prompt)
    return reasoner.propose(contexts), reasoner.figures()


def _local_proposal(c: dict, label: str, probs, preds, per_item: float) -> dict:
    probability = float(probs.max())
    return {
        "key": c["key"],
        "entity_key": c["entity_key"],
        "context_hash": c["context_hash"],
        "event": c["event"],
        "context_used": _context_used(c),
        "facts": c["facts"],
        "invoice": c["invoice"],
        "decision": label,
        "probability": probability,
        "model": "local",
        "model_version": preds.model_version,
        "prompt_version": None,
        "probabilities": dict(zip(preds.classes, map(float, probs))),
        "local": {"decision": label, "probability": probability},
        "decision_type": decision_type(c["facts"]),
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "latency_s": round(per_item, 6),
        "cache_hit": False,
        "stated_amount": None,
        # The context layer's contract: [{"name", "penalty", "detail"}] per record.
        "quality_factors": c.get("quality_factors", []),
    }


def _context_used(c: dict) -> dict:
    po = c["purchase_order"] or {}
    return {
        "vendor_id": c["invoice"]["vendor_id"],
        "vendor_known": c["vendor"] is not None,
        "po_number": c["invoice"]["po_number"],
        "po_amount": po.get("amount"),
        "prior_payments": c["prior_payments"],
        "pii_redacted": c["pii_found"],
        # Which untrusted fields held personal data or were quarantined (paths, never text).
        "guarded": c.get("guarded", {}),
        "policy_passages": [{k: v for k, v in p.items() if k != "text"} for p in c.get("policy_passages", [])],
        # What the decision was made from: each source's state and age, conflicts, the
        # assembled document's items kept and dropped (`bosun explain` shows this).
        "sources": c.get("sources", {}),
        "conflicts": c.get("conflicts", []),
        "quality_factors": c.get("quality_factors", []),
        "knowledge": c.get("knowledge", {}),
        "assembly": {k: v for k, v in c.get("assembly", {}).items() if k != "document"},
    }


def _kept_policy(context: dict) -> str:
    """The policy passages the assembly kept within the token budget, as the model reads them."""
    kept = {k["item"] for k in context.get("assembly", {}).get("kept", [])}
    passages = context.get("policy_passages", [])
    if kept:
        passages = [p for p in passages if f"policy:{p['doc']}#{p['heading']}" in kept]
    return "\n\n".join(f"{p['doc']} / {p['heading']}: {p.get('text', '')}".rstrip(": ") for p in passages)


def rule_statement(feedback: RuleFeedback) -> str:
    """A refused answer, told to the model the way an accounts-payable lead would say it."""
    rules = "\n".join(
        f"- {r.name}: {r.description or 'a hard rule of the approval policy'} (the policy's own answer: {r.then})"
        for r in feedback.rules
    )
    return (
        f"Your previous answer ({', '.join(feedback.refused)}) breaks the approval policy for this invoice:\n"
        f"{rules}\n"
        f"The policy allows only: {', '.join(feedback.allowed)}. Decide again within it, stating the "
        "invoice's amount. The policy is checked again after you answer."
    )


def _question(prompt: Prompt, c: dict, feedback: Optional[RuleFeedback] = None) -> Question:
    policy_text = _kept_policy(c)
    values = {
        "policy": policy_text or "none found",
        "facts": json.dumps(c["facts"], sort_keys=True, default=str),
        "invoice": json.dumps(c["invoice"], sort_keys=True, default=str),
    }
    # The rendered prompt is exactly what the answer depends on (untrusted fields already guarded).
    text = prompt.render(**values)
    messages = [{"role": "user", "content": text}]
    if feedback is not None:
        # A second message, so the prompt (and its version) stays the one the first pass used.
        messages.append({"role": "user", "content": rule_statement(feedback)})
    inputs = text if feedback is None else [m["content"] for m in messages]
    return Question(key=c["key"], messages=messages, inputs=inputs)


def _call(llm: ChatModel, prompt: Prompt, q: Question) -> LLMAnswer:
    r = llm.complete(q.messages, prompt.output_model)
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


def _apply(p: dict, r, version: str, routing: RoutingPolicy) -> None:
    p.update(
        input_tokens=r.input_tokens,
        output_tokens=r.output_tokens,
        cost_usd=round(r.cost, 8),
        latency_s=round(p["latency_s"] + r.latency_s, 6),
        llm_status=r.status,
    )
    if r.fallback_needed:
        fallback = routing.when_budget_spent if r.status == "budget_spent" else routing.when_llm_unavailable
        p["route_reason"] += f"; {r.reason}; fell back to {fallback}"
        if fallback == "escalate":
            p.update(decision="no_result", probability=0.0, no_result_reason=r.reason)
        return
    p.update(model=r.model, model_version=r.model, prompt_version=version, cache_hit=r.status == "cached")
    if r.value is None:
        p.update(decision="no_result", probability=0.0, no_result_reason=r.reason)
    else:
        p.update(
            decision=r.value["decision"],
            probability=float(r.value["confidence"]),
            llm_reason=r.value["reason"],
            stated_amount=r.value.get("amount"),
        )
