"""Decision layer of the invoice workflow: reason, apply guardrails, assess confidence."""

import json
import os
from functools import lru_cache
from typing import Callable, Optional, Union

import dagster as dg

from assets.invoices.confidence import broader_query, factors, retrieval_factor
from assets.invoices.reasoning import propose
from assets.invoices.workflow import ASK_FOR_CONTEXT_THRESHOLD, MODEL_NAME, WORKFLOW, invoice_batches
from guardrails.engine import Policy, evaluate, load_policy
from orchestration.core.lineage import layer_group
from orchestration.decision.confidence import Calibrator, Thresholds, combine, quality_factors
from orchestration.decision.guardrail_checks import activation_counts, build_guardrail_checks
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.routing import RoutingPolicy
from resources.chat_model import ChatModel
from resources.database import BosunDatabase
from resources.io_managers import IN_RUN_IO_MANAGER
from resources.knowledge_base import PolicyDocuments, PolicyIndex
from resources.local_model import LocalModel

RE_RETRIEVAL_K = 6


@lru_cache(maxsize=1)
def invoice_policy() -> Policy:
    return load_policy(WORKFLOW)


def thresholds(policy: Policy) -> Thresholds:
    return Thresholds(act=policy.confidence_threshold, ask=ASK_FOR_CONTEXT_THRESHOLD)


def calibrator_path(local_model: LocalModel):
    return local_model.artifact_path(f"{MODEL_NAME}-calibrator")


def limit_overrides() -> dict[str, float]:
    """Config may tighten the policy's dynamic limits (never loosen them), per deployment."""
    raw = os.environ.get("BOSUN_INVOICES_GUARDRAIL_LIMITS")
    return {k: float(v) for k, v in json.loads(raw).items()} if raw else {}


def guard(proposals: list[dict], policy: Policy) -> list[dict]:
    overrides = limit_overrides()
    for p in proposals:
        # "no result" is not a decision a rule could allow; it goes to a person.
        proposed = "escalate" if p["decision"] == "no_result" else p["decision"]
        p["guardrails"] = evaluate(
            policy, proposed, p["facts"], stated={"amount": p.get("stated_amount")}, limit_overrides=overrides
        ).as_dict()
    return proposals


def model_group(p: dict) -> str:
    return "local" if p["model"] == "local" else "llm"


def calibrate(proposals: list[dict], calibrator: Calibrator) -> None:
    """Each model's probability -> its observed hit rate; one vectorised call per batch."""
    probs = (
        calibrator.apply([p["probability"] for p in proposals], [model_group(p) for p in proposals])
        if proposals
        else []
    )
    for p, v in zip(proposals, probs):
        p["probability_calibrated"] = float(v)
        p["calibrator_version"] = calibrator.version


def combined_confidence(p: dict) -> None:
    """Calibrated probability times every factor, with the breakdown kept on the decision."""
    if p["guardrails"]["blocked_by"]:
        # A hard rule decided: the outcome is the policy's, not the model's guess. But the
        # rule read the context, so degraded context (a vendor source down makes a known
        # vendor look unknown) still lowers confidence and can send it to a person.
        conf, breakdown = combine(1.0, quality_factors(p.get("quality_factors", [])))
        breakdown[0] = {"name": "decided_by_policy", "detail": ", ".join(p["guardrails"]["blocked_by"])}
        p["confidence"], p["confidence_breakdown"] = round(conf, 4), breakdown
        return
    conf, breakdown = combine(p["probability_calibrated"], factors(p))
    breakdown.insert(0, {"name": "model_probability_raw", "value": round(p["probability"], 4)})
    breakdown[1]["name"] = "model_probability_calibrated"
    p["confidence"], p["confidence_breakdown"] = round(conf, 4), breakdown


def assess(
    proposals: list[dict],
    policy: Policy,
    calibrator: Optional[Calibrator] = None,
    index: Union[PolicyIndex, Callable[[], PolicyIndex], None] = None,
) -> list[dict]:
    """`index` may be a function building the index: it is then called only if some
    decision asks for more context, so most batches never pay for it."""
    th = thresholds(policy)
    calibrate(proposals, calibrator or Calibrator())
    for p in proposals:
        combined_confidence(p)
    asking = [p for p in proposals if th.route(p["confidence"]) == "ask" and not p["guardrails"]["blocked_by"]]
    if asking and index is not None:
        _re_retrieve(asking, index() if callable(index) else index)
    for p in proposals:
        g = p["guardrails"]
        if g["decision"] == "escalate":
            p["route"], p["reason"] = "escalate", _escalation_reason(p)
        elif p["confidence"] < th.act:
            p["route"] = "escalate"
            p["reason"] = (
                f"confidence {p['confidence']:.2f} below {th.act}"
                + (f" (flagged: {', '.join(g['flagged_by'])})" if g["flagged_by"] else "")
                + (
                    f" (context: {', '.join(f['name'] for f in p['quality_factors'])})"
                    if p.get("quality_factors")
                    else ""
                )
                + (" after a broader retrieval" if p.get("re_retrieved") else "")
            )
        else:
            p["route"] = "act" if g["decision"] == "approve" else "record"
            p["reason"] = f"{g['decision']}" + (f" by policy: {', '.join(g['blocked_by'])}" if g["blocked_by"] else "")
        p["final_decision"] = g["decision"]
    return proposals


def _re_retrieve(asking: list[dict], index: PolicyIndex) -> None:
    """Ask for more context once: a broader query, more passages, the factors again."""
    hits = index.search_many([broader_query(p) for p in asking], k=RE_RETRIEVAL_K)
    for p, found in zip(asking, hits):
        passages = [{"doc": x.doc, "heading": x.heading, "score": round(s, 3)} for x, s in found]
        p["re_retrieved"] = True
        p["context_used"]["broader_policy_passages"] = passages
        if retrieval_factor(passages).penalty < retrieval_factor(p["context_used"].get("policy_passages")).penalty:
            p["context_used"]["policy_passages"] = passages
            combined_confidence(p)


def _escalation_reason(p: dict) -> str:
    if p["decision"] == "no_result":
        return f"model gave no result: {p.get('no_result_reason')}"
    return f"escalated by policy: {', '.join(p['guardrails']['blocked_by'])}"


def decide(
    contexts: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    ledger: Optional[LLMLedger] = None,
    index: Optional[PolicyIndex] = None,
    calibrator: Optional[Calibrator] = None,
    routing: Optional[RoutingPolicy] = None,
) -> list[dict]:
    policy = invoice_policy()
    proposals, _ = propose(contexts, local_model, llm, ledger, routing)
    calibrator = calibrator or Calibrator.load(calibrator_path(local_model))
    return assess(guard(proposals, policy), policy, calibrator, index)


# ---- the graph-backed asset: one op per stage, so the UI shows where time goes ----------


# The model and calibrator assets are inputs in the lineage only (Nothing): the op reads the
# promoted model and its calibrator through the `local_model` resource.
@dg.op(
    out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER),
    ins={"model_asset": dg.In(dg.Nothing), "calibrator_asset": dg.In(dg.Nothing)},
)
def reason(invoice_context: list[dict], local_model: LocalModel, llm: ChatModel, bosun_db: BosunDatabase) -> dict:
    proposals, routing = propose(invoice_context, local_model, llm, bosun_db.llm_ledger())
    return {"proposals": proposals, "routing": routing}


@dg.op(out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER))
def apply_guardrails(reasoned: dict) -> dict:
    return {**reasoned, "proposals": guard(reasoned["proposals"], invoice_policy())}


# The decisions (with the invoices' context) stay in the run's memory: the audit log keeps
# what must outlive it.
@dg.op(out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER))
def assess_confidence(
    guarded: dict, local_model: LocalModel, policy_documents: PolicyDocuments
) -> dg.Output[list[dict]]:
    calibrator = Calibrator.load(calibrator_path(local_model))
    # The broader re-retrieval builds its own index from the documents (milliseconds for a
    # policy set), and only when a decision asks: loading the policy_index asset into
    # every batch run would cost more than the rare re-retrieval.
    decisions = assess(guarded["proposals"], invoice_policy(), calibrator, lambda: PolicyIndex(policy_documents.load()))
    return dg.Output(
        decisions,
        metadata={**decision_metadata(decisions), **guarded["routing"], "calibrator_version": calibrator.version},
    )


def decision_metadata(decisions: list[dict]) -> dict:
    n = len(decisions) or 1
    count = lambda pred: sum(1 for d in decisions if pred(d))  # noqa: E731
    return {
        "decisions": len(decisions),
        "approved": count(lambda d: d["route"] == "act"),
        "held_or_rejected": count(lambda d: d["route"] == "record"),
        "escalated": count(lambda d: d["route"] == "escalate"),
        "escalation_rate": round(count(lambda d: d["route"] == "escalate") / n, 4),
        "re_retrieved": count(lambda d: d.get("re_retrieved", False)),
        "decided_by_llm": count(lambda d: d["model"] != "local"),
        "mean_confidence": round(sum(d["confidence"] for d in decisions) / n, 4),
        "input_tokens": sum(d["input_tokens"] for d in decisions),
        "output_tokens": sum(d["output_tokens"] for d in decisions),
        "cost_usd": round(sum(d["cost_usd"] for d in decisions), 6),
        "guardrail_activations": dg.MetadataValue.json(activation_counts(decisions)),
    }


@dg.graph_asset(
    partitions_def=invoice_batches,
    group_name=layer_group(WORKFLOW, "decision"),
    kinds={"ai"},
    ins={
        "invoice_context": dg.AssetIn(),
        "invoice_local_model": dg.AssetIn(dagster_type=dg.Nothing),
        "invoice_confidence_calibrator": dg.AssetIn(dagster_type=dg.Nothing),
    },
)
def invoice_decisions(invoice_context, invoice_local_model, invoice_confidence_calibrator):
    """One decision per invoice: the model's proposal, the guardrails' verdict, the
    calibrated confidence with its factor breakdown, and the route (act, record, escalate)."""
    reasoned = reason(invoice_context, model_asset=invoice_local_model, calibrator_asset=invoice_confidence_calibrator)
    return assess_confidence(apply_guardrails(reasoned))


invoice_guardrail_checks = build_guardrail_checks(invoice_policy(), invoice_decisions, invoice_batches, limit_overrides)
