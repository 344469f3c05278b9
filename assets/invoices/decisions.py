"""Decision layer of the invoice workflow: the engine's decision loop
(orchestration/decision/loop.py) with the invoice's hooks: `Reasoner.reason` (the local
model, the LLM through the router, the LLM told a violated rule), `judge` (the policy's
guardrails, the calibrator, the invoice's confidence factors) and `MoreContext` (the ERP
and the policies read again for an invoice the loop is unsure of)."""

import json
import os
from functools import lru_cache
from typing import Callable, Optional, Sequence, Union

import dagster as dg

from assets.invoices.confidence import factors
from assets.invoices.context import tokenizer_model
from assets.invoices.erp import ERPResource
from assets.invoices.more_context import MoreContext
from assets.invoices.reasoning import Reasoner
from assets.invoices.workflow import ASK_FOR_CONTEXT_THRESHOLD, DECISION_LOOP, MODEL_NAME, WORKFLOW, invoice_batches
from guardrails.engine import Policy, evaluate, load_policy
from orchestration.context.tokens import TokenCounter, counter_for
from orchestration.core.lineage import layer_group
from orchestration.decision.confidence import Calibrator, Thresholds, combine, quality_factors
from orchestration.decision.guardrail_checks import activation_counts, build_guardrail_checks
from orchestration.decision.llm_ledger import LLMLedger
from orchestration.decision.loop import (
    LOW_CONFIDENCE,
    DecisionHooks,
    Judgement,
    LoopBounds,
    PassRequest,
    loop_figures,
    rule_feedback,
    run_loop,
    settle,
    timed,
    with_pass_totals,
)
from orchestration.decision.prompts import Prompt
from orchestration.decision.routing import RoutingPolicy
from resources.chat_model import ChatModel
from resources.context_sources import ContextSources
from resources.database import BosunDatabase
from resources.io_managers import IN_RUN_IO_MANAGER
from resources.knowledge_base import PolicyDocuments, PolicyIndex
from resources.local_model import LocalModel


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
    """The guardrails' verdict on each proposal (`guardrails`), and what a model must be told
    to answer again within the policy (`rule_feedback`, when a hard rule refused)."""
    overrides = limit_overrides()
    for p in proposals:
        # "no result" is not a decision a rule could allow; it goes to a person.
        proposed = "escalate" if p["decision"] == "no_result" else p["decision"]
        verdict = evaluate(
            policy, proposed, p["facts"], stated={"amount": p.get("stated_amount")}, limit_overrides=overrides
        )
        p["guardrails"] = verdict.as_dict()
        p["rule_feedback"] = rule_feedback(policy, verdict, p["facts"], overrides)
    return proposals


def model_group(p: dict) -> str:
    return "local" if p["model"] == "local" else "llm"


def calibrate(proposals: list[dict], calibrator: Calibrator) -> None:
    """Each model's probability -> its observed hit rate; one vectorised call per pass."""
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


def judge(proposals: Sequence[dict], policy: Policy, calibrator: Calibrator) -> list[Judgement]:
    """The decision loop's `judge` hook: guardrails, calibration, the invoice's factors."""
    proposals = guard(list(proposals), policy)
    calibrate(proposals, calibrator)
    out = []
    for p in proposals:
        combined_confidence(p)
        g = p["guardrails"]
        out.append(
            Judgement(
                proposed=g["proposed"],
                decision=g["decision"],
                confidence=p["confidence"],
                blocked_by=tuple(g["blocked_by"]),
                flagged_by=tuple(g["flagged_by"]),
                feedback=p["rule_feedback"],
                no_result=p.get("no_result_reason") if p["decision"] == "no_result" else None,
                context_notes=tuple(f["name"] for f in p.get("quality_factors", [])),
            )
        )
    return out


def describe(p: dict) -> dict:
    """What a pass's audit record says of its proposal (no invoice text: the decision record has it)."""
    return {
        "model": p["model"],
        "model_version": p["model_version"],
        "prompt_version": p["prompt_version"],
        "route_reason": p.get("route_reason"),
        "context_hash": p["context_hash"],
        "probabilities": p["probabilities"],
        "stated_amount": p.get("stated_amount"),
        "sources": {n: s.get("status") for n, s in (p["context_used"].get("sources") or {}).items()},
        "policy_passages": [
            f"{x.get('doc')}#{x.get('heading')}" for x in p["context_used"].get("policy_passages") or []
        ],
        "input_tokens": p["input_tokens"],
        "output_tokens": p["output_tokens"],
        "cost_usd": p["cost_usd"],
        "latency_s": p["latency_s"],
    }


def decide_contexts(
    contexts: list[dict],
    reason: Callable[[Sequence[PassRequest]], Sequence[Optional[dict]]],
    read_more: Callable[[Sequence[dict], Sequence[dict]], Sequence[Optional[dict]]],
    calibrator: Optional[Calibrator] = None,
    policy: Optional[Policy] = None,
    bounds: LoopBounds = DECISION_LOOP,
    seconds: Optional[dict[str, float]] = None,
) -> list[dict]:
    """The engine's decision loop over a batch's contexts with the invoice's hooks; one
    decision per context, with its route (act, record, escalate) and the loop's passes.
    `seconds` collects the time spent in each hook."""
    policy = policy or invoice_policy()
    calibrator = calibrator or Calibrator()
    th = thresholds(policy)
    hooks = DecisionHooks(reason, lambda ps: judge(ps, policy, calibrator), read_more, describe)
    if seconds is not None:
        hooks = timed(hooks, seconds)
    decisions = []
    for result in run_loop(contexts, hooks, th, bounds):
        d = result.final
        settled = settle(result, th, acting={"approve"})
        summary = result.summary()
        d.pop("rule_feedback", None)
        d.update(
            route=settled.route,
            reason=settled.reason,
            final_decision=settled.decision,
            re_retrieved=any(p.why == LOW_CONFIDENCE for p in result.passes),
            decision_loop=summary,
        )
        if len(result.passes) > 1:  # what the decision cost, every pass included
            d.update(with_pass_totals(summary, ("input_tokens", "output_tokens", "cost_usd", "latency_s")))
            d["input_tokens"], d["output_tokens"] = int(d["input_tokens"]), int(d["output_tokens"])
        decisions.append(d)
    return decisions


def decide(
    contexts: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    ledger: Optional[LLMLedger] = None,
    index: Union[PolicyIndex, Callable[[], PolicyIndex], None] = None,
    calibrator: Optional[Calibrator] = None,
    routing: Optional[RoutingPolicy] = None,
    erp: Optional[ERPResource] = None,
    sources: Optional[ContextSources] = None,
    prompt: Optional[Prompt] = None,
    counter: Optional[TokenCounter] = None,
) -> list[dict]:
    """Decide a batch: without `erp` a low-confidence invoice's sources are not re-read,
    without `index` its policies are not (benchmarks, replay)."""
    reasoner = Reasoner(local_model, llm, ledger, routing, prompt)
    calibrator = calibrator or Calibrator.load(calibrator_path(local_model))
    return decide_contexts(contexts, reasoner.reason, MoreContext(index, erp, sources, counter), calibrator)


# ---- the graph-backed asset ---------------------------------------------------------------


# The model and calibrator assets are inputs in the lineage only (Nothing): the op reads the
# promoted model and its calibrator through the `local_model` resource. One op runs the whole
# loop (its passes interleave reasoning, guardrails and re-reads); the seconds spent in each
# hook are its metadata. The decisions (with the invoices' context) stay in the run's memory: the
# audit log keeps what must outlive it.
@dg.op(
    out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER),
    ins={"model_asset": dg.In(dg.Nothing), "calibrator_asset": dg.In(dg.Nothing)},
)
def decision_loop(
    invoice_context: list[dict],
    local_model: LocalModel,
    llm: ChatModel,
    bosun_db: BosunDatabase,
    erp: ERPResource,
    context_sources: ContextSources,
    policy_documents: PolicyDocuments,
) -> dg.Output[list[dict]]:
    calibrator = Calibrator.load(calibrator_path(local_model))
    reasoner = Reasoner(local_model, llm, bosun_db.llm_ledger())
    # The broader search builds its own index from the documents (milliseconds for a policy
    # set), and only when a decision asks: loading the policy_index asset into every batch
    # run would cost more than the rare re-read.
    more = MoreContext(
        lambda: PolicyIndex(policy_documents.load()), erp, context_sources, counter_for(tokenizer_model(llm))
    )
    seconds: dict[str, float] = {}
    decisions = decide_contexts(invoice_context, reasoner.reason, more, calibrator, seconds=seconds)
    return dg.Output(
        decisions,
        metadata={
            **decision_metadata(decisions),
            **reasoner.figures(),
            **seconds,
            "calibrator_version": calibrator.version,
        },
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
        **loop_figures([d["decision_loop"] for d in decisions]),
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
    """One decision per invoice through the decision loop: the model's proposal, the
    guardrails' verdict, the calibrated confidence with its factor breakdown, more context or
    the violated rule told to the model where needed, and the route (act, record, escalate)."""
    return decision_loop(
        invoice_context, model_asset=invoice_local_model, calibrator_asset=invoice_confidence_calibrator
    )


invoice_guardrail_checks = build_guardrail_checks(invoice_policy(), invoice_decisions, invoice_batches, limit_overrides)
