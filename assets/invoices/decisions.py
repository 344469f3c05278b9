"""Decision layer of the invoice workflow: reason, apply guardrails, assess confidence."""


import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, Field

from guardrails.engine import Policy, evaluate, load_policy
from resources.chat_model import ChatModel
from resources.local_model import LocalModel

from assets.invoices.context import model_features
from assets.invoices.workflow import MODEL_NAME, ROUTING_THRESHOLD, WORKFLOW, invoice_batches

PROMPT_PATH = Path(__file__).parent / "prompts" / "decide_invoice.md"


class InvoiceVerdict(BaseModel):
    """What the LLM must answer; anything else is re-asked, then 'no result'."""

    decision: Literal["approve", "hold", "reject"]
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(max_length=500)


@lru_cache(maxsize=1)
def invoice_policy() -> Policy:
    return load_policy(WORKFLOW)


def load_prompt() -> tuple[str, str]:
    """The template and its version: the content hash, so editing the file is a new version."""
    text = PROMPT_PATH.read_text()
    return text, "prompt-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def propose(contexts: list[dict], local_model: LocalModel, llm: ChatModel) -> list[dict]:
    """The cheapest model first; the LLM only where the local model is unsure."""
    preds = local_model.predict(MODEL_NAME, [model_features(c["facts"]) for c in contexts])
    proposals = []
    for c, label, probs in zip(contexts, preds.labels, preds.probabilities):
        proposals.append({
            "key": c["key"], "entity_key": c["entity_key"], "context_hash": c["context_hash"],
            "event": c["event"], "context_used": _context_used(c),
            "facts": c["facts"], "invoice": c["invoice"], "decision": label,
            "probability": float(probs.max()), "model": "local", "model_version": preds.model_version,
            "prompt_version": None, "probabilities": dict(zip(preds.classes, map(float, probs))),
            "input_tokens": 0, "output_tokens": 0, "latency_s": 0.0,
            "quality_factors": c.get("quality_factors", []),
        })
    unsure = [(c, p) for c, p in zip(contexts, proposals) if p["probability"] < ROUTING_THRESHOLD]
    if llm.enabled and unsure:
        template, version = load_prompt()  # once per batch: every decision in it has one version
        for c, p in unsure:
            _ask_llm(llm, template, version, c, p)
    return proposals


def _context_used(c: dict) -> dict:
    po = c["purchase_order"] or {}
    return {"vendor_id": c["invoice"]["vendor_id"], "vendor_known": c["vendor"] is not None,
            "po_number": c["invoice"]["po_number"], "po_amount": po.get("amount"),
            "prior_payments": c["prior_payments"], "pii_redacted": c["pii_found"],
            "policy_passages": [{k: v for k, v in p.items() if k != "text"} for p in c.get("policy_passages", [])],
            # What the decision was made from: each source's state and age, conflicts, the
            # assembled document's items kept and dropped (`bosun explain` shows this).
            "sources": c.get("sources", {}), "conflicts": c.get("conflicts", []),
            "quality_factors": c.get("quality_factors", []), "knowledge": c.get("knowledge", {}),
            "assembly": {k: v for k, v in c.get("assembly", {}).items() if k != "document"}}


def _ask_llm(llm: ChatModel, template: str, version: str, context: dict, proposal: dict) -> None:
    policy_text = _kept_policy(context)
    prompt = template.format(
        policy=policy_text or "none found",
        facts=json.dumps(context["facts"], sort_keys=True, default=str),
        invoice=json.dumps(context["invoice"], sort_keys=True, default=str))
    started = time.perf_counter()
    result = llm.complete([{"role": "user", "content": prompt}], InvoiceVerdict)
    proposal.update(model=result.model, model_version=result.model, prompt_version=version,
                    input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                    latency_s=round(time.perf_counter() - started, 4))
    if result.value is None:
        proposal.update(decision="no_result", probability=0.0, no_result_reason=result.no_result_reason)
    else:
        proposal.update(decision=result.value.decision, probability=result.value.confidence,
                        llm_reason=result.value.reason)


def _kept_policy(context: dict) -> str:
    """The policy passages the assembly kept within the token budget, as the model reads them."""
    kept = {k["item"] for k in context.get("assembly", {}).get("kept", [])}
    passages = context.get("policy_passages", [])
    if kept:
        passages = [p for p in passages if f"policy:{p['doc']}#{p['heading']}" in kept]
    return "\n\n".join(f"{p['doc']} / {p['heading']}: {p.get('text', '')}".rstrip(": ") for p in passages)


def guard(proposals: list[dict], policy: Policy) -> list[dict]:
    for p in proposals:
        # "no result" is not a decision a rule could allow; it goes to a person.
        proposed = p["decision"] if p["decision"] in policy.decisions else "escalate"
        p["guardrails"] = evaluate(policy, proposed, p["facts"]).as_dict()
    return proposals


def assess(proposals: list[dict], policy: Policy) -> list[dict]:
    for p in proposals:
        g = p["guardrails"]
        if g["blocked_by"]:
            # A hard rule decided: the outcome is the policy's, not the model's guess.
            confidence = 1.0
        else:
            confidence = p["probability"] * g["confidence_factor"]
        # Degraded context (stale or missing source, knowledge gap, unresolved conflict)
        # lowers confidence whoever decided; the factors are on the decision (issue 4 generalises this).
        for f in p.get("quality_factors", []):
            confidence *= 1 - f["penalty"]
        p["confidence"] = round(confidence, 4)
        if g["decision"] == "escalate":
            p["route"], p["reason"] = "escalate", _escalation_reason(p)
        elif confidence < policy.confidence_threshold:
            p["route"] = "escalate"
            p["reason"] = f"confidence {confidence:.2f} below {policy.confidence_threshold}" + (
                f" (flagged: {', '.join(g['flagged_by'])})" if g["flagged_by"] else "") + (
                f" (context: {', '.join(f['name'] for f in p['quality_factors'])})" if p.get("quality_factors") else "")
        else:
            p["route"] = "act" if g["decision"] == "approve" else "record"
            p["reason"] = f"{g['decision']}" + (f" by policy: {', '.join(g['blocked_by'])}" if g["blocked_by"] else "")
        p["final_decision"] = g["decision"]
    return proposals


def _escalation_reason(p: dict) -> str:
    if p["decision"] == "no_result":
        return f"model gave no result: {p.get('no_result_reason')}"
    return f"escalated by policy: {', '.join(p['guardrails']['blocked_by'])}"


def decide(contexts: list[dict], local_model: LocalModel, llm: ChatModel) -> list[dict]:
    policy = invoice_policy()
    return assess(guard(propose(contexts, local_model, llm), policy), policy)


# ---- the graph-backed asset: one op per stage, so the UI shows where time goes ----------

@dg.op
def reason(invoice_context: list[dict], local_model: LocalModel, llm: ChatModel) -> list[dict]:
    return propose(invoice_context, local_model, llm)


@dg.op
def apply_guardrails(proposals: list[dict]) -> list[dict]:
    return guard(proposals, invoice_policy())


@dg.op
def assess_confidence(guarded: list[dict]) -> dg.Output[list[dict]]:
    decisions = assess(guarded, invoice_policy())
    return dg.Output(decisions, metadata=decision_metadata(decisions))


def decision_metadata(decisions: list[dict]) -> dict:
    n = len(decisions) or 1
    count = lambda pred: sum(1 for d in decisions if pred(d))  # noqa: E731
    activations: dict[str, int] = {}
    for d in decisions:
        for name in d["guardrails"]["blocked_by"] + d["guardrails"]["flagged_by"]:
            activations[name] = activations.get(name, 0) + 1
    return {
        "decisions": len(decisions),
        "approved": count(lambda d: d["route"] == "act"),
        "held_or_rejected": count(lambda d: d["route"] == "record"),
        "escalated": count(lambda d: d["route"] == "escalate"),
        "escalation_rate": round(count(lambda d: d["route"] == "escalate") / n, 4),
        "llm_calls": count(lambda d: d["model"] != "local"),
        "mean_confidence": round(sum(d["confidence"] for d in decisions) / n, 4),
        "input_tokens": sum(d["input_tokens"] for d in decisions),
        "output_tokens": sum(d["output_tokens"] for d in decisions),
        "guardrail_activations": dg.MetadataValue.json(activations),
    }


@dg.graph_asset(partitions_def=invoice_batches, group_name="invoice_workflow")
def invoice_decisions(invoice_context: list[dict]) -> list[dict]:
    """One decision per invoice: the model's proposal, the guardrails' verdict, the
    confidence and the route (act, record, escalate)."""
    return assess_confidence(apply_guardrails(reason(invoice_context)))
