"""The decision layer of any workflow's batch: the decision loop (loop.py) with the
engine's judge (the policy's guardrails, the calibrator, the confidence factors) over a
batch's contexts, one decision per context with its route and its passes.

A workflow supplies its reasoner (`reason`), its re-read of the sources (`read_more`), and
in a `DecisionSpec` its policy, thresholds, loop bounds and what lowers its confidence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Optional, Sequence

import dagster as dg

from guardrails.engine import Policy, evaluate
from orchestration.decision.confidence import Calibrator, Factor, Thresholds, combine, quality_factors
from orchestration.decision.guardrail_checks import activation_counts
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


def default_factors(p: dict) -> list[Factor]:
    """Soft guardrails that fired and the context's quality factors."""
    g = p["guardrails"]
    out = (
        [Factor("soft_guardrails", 1.0 - g["confidence_factor"], ", ".join(g["flagged_by"]))] if g["flagged_by"] else []
    )
    return out + quality_factors(p.get("quality_factors", []))


def env_limit_overrides(workflow: str) -> Callable[[], dict[str, float]]:
    """Config may tighten the policy's dynamic limits (never loosen them), per deployment:
    `BOSUN_<WORKFLOW>_GUARDRAIL_LIMITS`, a JSON object of limit -> value, read on each call."""

    def overrides() -> dict[str, float]:
        raw = os.environ.get(f"BOSUN_{workflow.upper()}_GUARDRAIL_LIMITS")
        return {k: float(v) for k, v in json.loads(raw).items()} if raw else {}

    return overrides


def _model_group(p: dict) -> str:
    return "local" if p["model"] == "local" else "llm"


@dataclass(frozen=True)
class DecisionSpec:
    """What a workflow's decisions are judged by."""

    policy: Policy
    thresholds: Thresholds
    bounds: LoopBounds
    acting: Collection[str]  # the decisions that act (the rest are recorded)
    # Every multiplier on a proposal's calibrated probability, in the order shown.
    factors: Callable[[dict], list[Factor]] = default_factors
    # What the proposal states that a rule compares with the facts (e.g. an amount).
    stated: Callable[[dict], Mapping[str, Any]] = lambda p: {}
    # Config may tighten the policy's dynamic limits (never loosen them), per deployment.
    limit_overrides: Callable[[], Mapping[str, float]] = dict
    group: Callable[[dict], str] = field(default=_model_group)  # the calibrator's group of a proposal


def guard(proposals: list[dict], spec: DecisionSpec) -> list[dict]:
    """The guardrails' verdict on each proposal (`guardrails`), and what a model must be told
    to answer again within the policy (`rule_feedback`, when a hard rule refused)."""
    overrides = dict(spec.limit_overrides())
    for p in proposals:
        # "no result" is not a decision a rule could allow; it goes to a person.
        proposed = "escalate" if p["decision"] == "no_result" else p["decision"]
        verdict = evaluate(spec.policy, proposed, p["facts"], stated=dict(spec.stated(p)), limit_overrides=overrides)
        p["guardrails"] = verdict.as_dict()
        p["rule_feedback"] = rule_feedback(spec.policy, verdict, p["facts"], overrides)
    return proposals


def calibrate(proposals: list[dict], calibrator: Calibrator, spec: DecisionSpec) -> None:
    """Each model's probability -> its observed hit rate; one vectorised call per pass."""
    probs = (
        calibrator.apply([p["probability"] for p in proposals], [spec.group(p) for p in proposals]) if proposals else []
    )
    for p, v in zip(proposals, probs):
        p["probability_calibrated"] = float(v)
        p["calibrator_version"] = calibrator.version


def combined_confidence(p: dict, spec: DecisionSpec) -> None:
    """Calibrated probability times every factor, with the breakdown kept on the decision."""
    if p["guardrails"]["blocked_by"]:
        # A hard rule decided: the outcome is the policy's, not the model's guess. But the
        # rule read the context, so degraded context still lowers confidence and can send
        # the event to a person.
        conf, breakdown = combine(1.0, quality_factors(p.get("quality_factors", [])))
        breakdown[0] = {"name": "decided_by_policy", "detail": ", ".join(p["guardrails"]["blocked_by"])}
        p["confidence"], p["confidence_breakdown"] = round(conf, 4), breakdown
        return
    conf, breakdown = combine(p["probability_calibrated"], spec.factors(p))
    breakdown.insert(0, {"name": "model_probability_raw", "value": round(p["probability"], 4)})
    breakdown[1]["name"] = "model_probability_calibrated"
    p["confidence"], p["confidence_breakdown"] = round(conf, 4), breakdown


def judge(proposals: Sequence[dict], spec: DecisionSpec, calibrator: Calibrator) -> list[Judgement]:
    """The decision loop's `judge` hook: guardrails, calibration, confidence factors."""
    proposals = guard(list(proposals), spec)
    calibrate(proposals, calibrator, spec)
    out = []
    for p in proposals:
        combined_confidence(p, spec)
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


def describe_pass(p: dict) -> dict:
    """What a pass's audit record says of its proposal (no event text: the decision record has it)."""
    used = p.get("context_used") or {}
    return {
        "model": p["model"],
        "model_version": p.get("model_version"),
        "prompt_version": p.get("prompt_version"),
        "route_reason": p.get("route_reason"),
        "context_hash": p.get("context_hash"),
        "probabilities": p.get("probabilities"),
        **{k: p[k] for k in ("stated_amount",) if k in p},
        "sources": {n: s.get("status") for n, s in (used.get("sources") or {}).items()},
        # The knowledge passages the proposal read (`bosun explain` and `bosun audit` show them).
        "policy_passages": [f"{x.get('doc')}#{x.get('heading')}" for x in used.get("policy_passages") or []],
        **{k: p.get(k, 0) for k in ("input_tokens", "output_tokens", "cost_usd", "latency_s")},
    }


def nothing_more(contexts: Sequence[dict], proposals: Sequence[dict]) -> list[Optional[dict]]:
    """A `read_more` for a workflow whose sources have nothing more to say."""
    return [None for _ in contexts]


def decide_batch(
    contexts: Sequence[dict],
    reason: Callable[[Sequence[PassRequest]], Sequence[Optional[dict]]],
    spec: DecisionSpec,
    calibrator: Optional[Calibrator] = None,
    read_more: Callable[[Sequence[dict], Sequence[dict]], Sequence[Optional[dict]]] = nothing_more,
    seconds: Optional[dict[str, float]] = None,
    describe: Callable[[dict], Mapping[str, Any]] = describe_pass,
) -> list[dict]:
    """The decision loop over a batch's contexts: one decision per context, with its route
    (act, record, escalate) and the loop's passes. `seconds` collects the time in each hook."""
    calibrator = calibrator or Calibrator()
    hooks = DecisionHooks(reason, lambda ps: judge(ps, spec, calibrator), read_more, describe)
    if seconds is not None:
        hooks = timed(hooks, seconds)
    decisions = []
    for result in run_loop(list(contexts), hooks, spec.thresholds, spec.bounds):
        d = result.final
        settled = settle(result, spec.thresholds, acting=spec.acting)
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


def decision_metadata(decisions: Sequence[dict]) -> dict:
    """A batch's decisions in figures, for the decision asset's materialization."""
    n = len(decisions) or 1

    def count(pred) -> int:
        return sum(1 for d in decisions if pred(d))

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
        "input_tokens": sum(d.get("input_tokens", 0) for d in decisions),
        "output_tokens": sum(d.get("output_tokens", 0) for d in decisions),
        "cost_usd": round(sum(d.get("cost_usd", 0.0) for d in decisions), 6),
        "guardrail_activations": dg.MetadataValue.json(activation_counts(decisions)),
    }
