"""Decision layer of the invoice workflow: reason, apply guardrails, assess confidence."""


import json
import os
from functools import lru_cache
from typing import Optional

import dagster as dg

from guardrails.engine import Policy, evaluate, load_policy
from orchestration.guardrail_checks import activation_counts, build_guardrail_checks
from orchestration.llm_ledger import LLMLedger
from resources.chat_model import ChatModel
from resources.database import BosunDatabase
from resources.local_model import LocalModel

from assets.invoices.reasoning import propose
from assets.invoices.workflow import WORKFLOW, invoice_batches


@lru_cache(maxsize=1)
def invoice_policy() -> Policy:
    return load_policy(WORKFLOW)


def limit_overrides() -> dict[str, float]:
    """Config may tighten the policy's dynamic limits (never loosen them), per deployment."""
    raw = os.environ.get("BOSUN_INVOICES_GUARDRAIL_LIMITS")
    return {k: float(v) for k, v in json.loads(raw).items()} if raw else {}


def guard(proposals: list[dict], policy: Policy) -> list[dict]:
    overrides = limit_overrides()
    for p in proposals:
        # "no result" is not a decision a rule could allow; it goes to a person.
        proposed = "escalate" if p["decision"] == "no_result" else p["decision"]
        p["guardrails"] = evaluate(policy, proposed, p["facts"], stated={"amount": p.get("stated_amount")},
                                   limit_overrides=overrides).as_dict()
    return proposals


def assess(proposals: list[dict], policy: Policy) -> list[dict]:
    for p in proposals:
        g = p["guardrails"]
        if g["blocked_by"]:
            # A hard rule decided: the outcome is the policy's, not the model's guess.
            confidence = 1.0
        else:
            confidence = p["probability"] * g["confidence_factor"]
        p["confidence"] = round(confidence, 4)
        if g["decision"] == "escalate":
            p["route"], p["reason"] = "escalate", _escalation_reason(p)
        elif confidence < policy.confidence_threshold:
            p["route"] = "escalate"
            p["reason"] = f"confidence {confidence:.2f} below {policy.confidence_threshold}" + (
                f" (flagged: {', '.join(g['flagged_by'])})" if g["flagged_by"] else "")
        else:
            p["route"] = "act" if g["decision"] == "approve" else "record"
            p["reason"] = f"{g['decision']}" + (f" by policy: {', '.join(g['blocked_by'])}" if g["blocked_by"] else "")
        p["final_decision"] = g["decision"]
    return proposals


def _escalation_reason(p: dict) -> str:
    if p["decision"] == "no_result":
        return f"model gave no result: {p.get('no_result_reason')}"
    return f"escalated by policy: {', '.join(p['guardrails']['blocked_by'])}"


def decide(contexts: list[dict], local_model: LocalModel, llm: ChatModel,
           ledger: Optional[LLMLedger] = None) -> list[dict]:
    policy = invoice_policy()
    proposals, _ = propose(contexts, local_model, llm, ledger)
    return assess(guard(proposals, policy), policy)


# ---- the graph-backed asset: one op per stage, so the UI shows where time goes ----------

@dg.op
def reason(invoice_context: list[dict], local_model: LocalModel, llm: ChatModel,
           bosun_db: BosunDatabase) -> dict:
    proposals, routing = propose(invoice_context, local_model, llm, bosun_db.llm_ledger())
    return {"proposals": proposals, "routing": routing}


@dg.op
def apply_guardrails(reasoned: dict) -> dict:
    return {**reasoned, "proposals": guard(reasoned["proposals"], invoice_policy())}


@dg.op
def assess_confidence(guarded: dict) -> dg.Output[list[dict]]:
    decisions = assess(guarded["proposals"], invoice_policy())
    return dg.Output(decisions, metadata={**decision_metadata(decisions), **guarded["routing"]})


def decision_metadata(decisions: list[dict]) -> dict:
    n = len(decisions) or 1
    count = lambda pred: sum(1 for d in decisions if pred(d))  # noqa: E731
    activations = activation_counts(decisions)
    return {
        "decisions": len(decisions),
        "approved": count(lambda d: d["route"] == "act"),
        "held_or_rejected": count(lambda d: d["route"] == "record"),
        "escalated": count(lambda d: d["route"] == "escalate"),
        "escalation_rate": round(count(lambda d: d["route"] == "escalate") / n, 4),
        "decided_by_llm": count(lambda d: d["model"] != "local"),
        "mean_confidence": round(sum(d["confidence"] for d in decisions) / n, 4),
        "input_tokens": sum(d["input_tokens"] for d in decisions),
        "output_tokens": sum(d["output_tokens"] for d in decisions),
        "cost_usd": round(sum(d["cost_usd"] for d in decisions), 6),
        "guardrail_activations": dg.MetadataValue.json(activations),
    }


@dg.graph_asset(partitions_def=invoice_batches, group_name="invoice_workflow")
def invoice_decisions(invoice_context: list[dict]) -> list[dict]:
    """One decision per invoice: the model's proposal, the guardrails' verdict, the
    confidence and the route (act, record, escalate)."""
    return assess_confidence(apply_guardrails(reason(invoice_context)))


invoice_guardrail_checks = build_guardrail_checks(invoice_policy(), invoice_decisions, invoice_batches,
                                                  limit_overrides)
