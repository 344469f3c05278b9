"""Proposals for a batch of invoices: the local model on the whole batch, the LLM through
the router for the few it is unsure of (or a rule sends there)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from assets.invoices.context import model_features
from assets.invoices.workflow import MODEL_NAME, ROUTING, WORKFLOW
from orchestration.decision.llm_ledger import LLMLedger
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


def propose(
    contexts: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    ledger: Optional[LLMLedger] = None,
    routing: Optional[RoutingPolicy] = None,
    prompt: Optional[Prompt] = None,
) -> tuple[list[dict], dict]:
    """One proposal per context, and the batch's routing figures. `routing` replaces the
    workflow's policy (benchmarks compare policies), `prompt` the live prompt (replay)."""
    started = time.perf_counter()
    preds = local_model.predict(MODEL_NAME, [model_features(c["facts"]) for c in contexts])
    per_item = (time.perf_counter() - started) / max(1, len(contexts))
    proposals = []
    for c, label, probs in zip(contexts, preds.labels, preds.probabilities):
        probability = float(probs.max())
        proposals.append(
            {
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
        )
    prompt = prompt or decision_prompt()
    routing = budget_from_env(WORKFLOW, routing or ROUTING)
    router = Router(
        WORKFLOW,
        routing,
        price_table(),
        ledger,
        (getattr(llm, "model_name", None) or "llm") if llm.enabled else None,
        prompt.version,
    )
    chosen = []
    for c, p in zip(contexts, proposals):
        wants, why = router.wants_llm(p["decision_type"], p["probability"])
        p["route_reason"] = why
        if wants:
            chosen.append((c, p))
    if chosen:
        questions = [_question(prompt, c) for c, _ in chosen]
        answers = router.ask(questions, lambda q: _call(llm, prompt, q))
        for (_, p), q, r in zip(chosen, questions, answers):
            _apply(p, r, prompt.version, routing)
    s = router.spend
    figures = {
        "llm_calls": s.calls,
        "llm_cache_hits": s.cache_hits,
        "llm_cost_usd": round(s.cost, 6),
        "llm_budget_refusals": s.budget_refusals,
        "llm_unavailable": s.unavailable,
        "routed_to_llm": len(chosen),
        "prompt_version": prompt.version,
    }
    return proposals, figures


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


def _question(prompt: Prompt, c: dict) -> Question:
    policy_text = _kept_policy(c)
    values = {
        "policy": policy_text or "none found",
        "facts": json.dumps(c["facts"], sort_keys=True, default=str),
        "invoice": json.dumps(c["invoice"], sort_keys=True, default=str),
    }
    # The rendered prompt is exactly what the answer depends on (untrusted fields already guarded).
    text = prompt.render(**values)
    return Question(key=c["key"], messages=[{"role": "user", "content": text}], inputs=text)


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
