"""The seed's decision loop, written once for every workflow.

    reason ──► guardrail validation ──► confidence check
      ▲             │ a hard rule refuses          │ high (>= act): the selected action
      │             ▼                              │ low (ask..act): request more context
      │       modify approach: the violated        │ very low (< ask): escalate
      │       rule stated to the model             ▼
      └───────────── reason again ◄──── re-read the context more broadly

A workflow supplies three hooks, each called once per pass for a whole batch:

- `reason(requests)`: a proposal per request. A request says which pass it is, why (the
  first, low confidence, or a violated rule), the rules violated so far (`RuleFeedback`, to
  be stated to a model that can read them) and the previous proposal. Answering None to a
  rule pass means "no other approach" (a classifier asked the same question answers the
  same): the rule's outcome stands.
- `judge(proposals)`: the guardrails' verdict and the calibrated confidence of each, as a
  `Judgement` (the workflow's own factors decide how sure it is).
- `read_more(items, proposals)`: each item's context read again, from its sources and its
  knowledge with a broader query; None when nothing new was found, since asking a model the
  same question again would only cost.

A hard rule outranks confidence: a refused proposal is re-asked (at most
`max_rule_passes` times, and only while the policy still allows some decision), else the
rule's outcome is the decision, however sure the model was. A proposal the rules allow goes
by the thresholds: ask for more context at most `max_context_passes` times, else act or
escalate. So an event never takes more than `1 + max_context_passes + max_rule_passes`
passes, and every pass ends in a judgement, so every event ends in a decision or an
escalation whatever a model does (no answer at all is an escalation).

Every pass is its own audit record: the passes before the last are `decision_pass`
records, the last is the workflow's `decision` record, carrying its pass number. A decision
made in one pass has no extra record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generic, Literal, Mapping, Optional, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from guardrails.engine import ALLOWED_DECISION_RULE, Policy, Verdict, hard_violations
from orchestration.audit.chain import AuditEntry
from orchestration.decision.confidence import Thresholds

I = TypeVar("I")  # noqa: E741 - the item a workflow decides about (its context record)
P = TypeVar("P")  # the workflow's proposal

FIRST = "first"
LOW_CONFIDENCE = "low_confidence"
RULE_VIOLATED = "rule_violated"
PASS_KIND = "decision_pass"

Route = Literal["act", "ask", "escalate"]
Ending = Literal[
    "confident",  # allowed by the rules, confidence at or above `act`
    "low_confidence",  # below `ask`, or still below `act` when no more context may be asked for
    "nothing_more_to_read",  # below `act`, and a re-read found nothing new to ask about
    "rule_outcome",  # a hard rule refused, and the rule passes are used up or no decision is left
    "no_other_approach",  # a hard rule refused, and the model had no other answer
]


class LoopBounds(BaseModel):
    """How many extra passes a workflow allows per event (its settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_context_passes: int = Field(default=1, ge=0, le=5)
    max_rule_passes: int = Field(default=1, ge=0, le=5)

    @property
    def max_passes(self) -> int:
        return 1 + self.max_context_passes + self.max_rule_passes


@dataclass(frozen=True)
class ViolatedRule:
    name: str
    description: str
    forbids: tuple[str, ...]
    then: str


@dataclass(frozen=True)
class RuleFeedback:
    """What a model must be told to answer again within the policy."""

    refused: tuple[str, ...]  # the decisions refused so far
    rules: tuple[ViolatedRule, ...]
    allowed: tuple[str, ...]  # what the policy still allows for this event's facts

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def merged(self, later: Optional["RuleFeedback"]) -> "RuleFeedback":
        """Rules stay stated on every later pass: a model told once must not forget it."""
        if later is None:
            return self
        known = set(self.names)
        return RuleFeedback(
            tuple(dict.fromkeys(self.refused + later.refused)),
            self.rules + tuple(r for r in later.rules if r.name not in known),
            tuple(d for d in self.allowed if d in later.allowed),
        )

    def statement(self) -> str:
        """The default phrasing; a workflow may phrase it for its own prompt."""
        lines = [f"Your previous answer ({', '.join(self.refused)}) is not allowed by the policy:"]
        lines += [f"- {r.name}: {r.description or 'hard rule'}" for r in self.rules]
        lines.append(f"Answer again with one of: {', '.join(self.allowed)}.")
        return "\n".join(lines)


def rule_feedback(
    policy: Policy, verdict: Verdict, facts: dict, limit_overrides: dict[str, float] | None = None
) -> Optional[RuleFeedback]:
    """The feedback for a refused proposal, or None when there is nothing to re-ask: the
    rules allowed it, or they forbid every decision (a person decides, e.g. quarantined text)."""
    if not verdict.blocked_by:
        return None
    allowed = tuple(d for d in policy.decisions if not hard_violations(policy, d, facts, limit_overrides))
    if not allowed:
        return None
    by_name: dict[str, ViolatedRule] = {
        r.name: ViolatedRule(r.name, r.description, tuple(r.forbid), r.then) for r in policy.hard
    }
    for r in policy.output:
        by_name[r.name] = ViolatedRule(
            r.name, r.description or f"the stated {r.stated} must match the {r.must_match}", (), r.then
        )
    by_name[ALLOWED_DECISION_RULE] = ViolatedRule(
        ALLOWED_DECISION_RULE, f"the decision must be one of {', '.join(policy.decisions)}", (), "escalate"
    )
    rules = tuple(by_name[n] for n in verdict.blocked_by if n in by_name)
    return RuleFeedback((verdict.proposed,), rules, allowed)


@dataclass(frozen=True)
class Judgement:
    """The loop's view of one guarded, scored proposal."""

    proposed: str
    decision: str  # after the hard rules; "escalate" sends it to a person
    confidence: float
    blocked_by: tuple[str, ...] = ()
    flagged_by: tuple[str, ...] = ()
    feedback: Optional[RuleFeedback] = None  # set when a hard rule refused and another answer is possible
    no_result: Optional[str] = None  # the model gave no usable answer, and why
    context_notes: tuple[str, ...] = ()  # what in the context lowered confidence (factor names)


@dataclass(frozen=True)
class PassRequest(Generic[I, P]):
    item: I
    number: int
    why: str  # FIRST, LOW_CONFIDENCE, or "rule_violated: NAME, ..."
    feedback: Optional[RuleFeedback] = None
    previous: Optional[P] = None

    @property
    def after_rule(self) -> bool:
        return self.why.startswith(RULE_VIOLATED)


@dataclass(frozen=True)
class Pass:
    number: int
    why: str
    judgement: Judgement
    route: Route  # the thresholds' route of this pass's confidence
    proposal: Mapping[str, Any] = field(default_factory=dict)  # the workflow's description of it

    def record(self) -> dict:
        j = self.judgement
        return {
            "pass": self.number,
            "why": self.why,
            **dict(self.proposal),
            "proposed": j.proposed,
            "decision": j.decision,
            "confidence": j.confidence,
            "route": self.route,
            "blocked_by": list(j.blocked_by),
            "flagged_by": list(j.flagged_by),
            "rules_stated": list(j.feedback.names) if j.feedback else [],
            "no_result": j.no_result,
        }


@dataclass(frozen=True)
class LoopResult(Generic[P]):
    final: P
    passes: tuple[Pass, ...]
    ended: Ending

    @property
    def judgement(self) -> Judgement:
        return self.passes[-1].judgement

    def summary(self) -> dict:
        """JSON-ready, for the decision's audit records (`pass_entries`, `final_pass_fields`)."""
        return {"passes": [p.record() for p in self.passes], "ended": self.ended}


@dataclass(frozen=True)
class DecisionHooks(Generic[I, P]):
    reason: Callable[[Sequence[PassRequest[I, P]]], Sequence[Optional[P]]]
    judge: Callable[[Sequence[P]], Sequence[Judgement]]
    read_more: Callable[[Sequence[I], Sequence[P]], Sequence[Optional[I]]]
    describe: Callable[[P], Mapping[str, Any]] = lambda proposal: {}


def timed(hooks: DecisionHooks[I, P], seconds: dict[str, float]) -> DecisionHooks[I, P]:
    """The same hooks, adding the seconds each spends to `seconds` (`reason_s`, `judge_s`,
    `read_more_s`), summed over the passes: where a batch's decision time went."""

    def clock(name: str, fn: Callable) -> Callable:
        def call(*args):
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - started, 4)

        return call

    return DecisionHooks(
        clock("reason_s", hooks.reason),
        clock("judge_s", hooks.judge),
        clock("read_more_s", hooks.read_more),
        hooks.describe,
    )


def loop_figures(summaries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """A batch's loop in figures, for its metadata."""
    passes = [s["passes"] for s in summaries]
    asked = lambda prefix: sum(any(p["why"].startswith(prefix) for p in ps) for ps in passes)  # noqa: E731
    return {
        "passes_max": max((len(ps) for ps in passes), default=0),
        "extra_passes": sum(len(ps) - 1 for ps in passes),
        "asked_again_after_context": asked(LOW_CONFIDENCE),
        "asked_again_after_rule": asked(RULE_VIOLATED),
    }


@dataclass
class _Event(Generic[I, P]):
    item: I
    request: Optional[PassRequest[I, P]]
    proposal: Optional[P] = None
    passes: list[Pass] = field(default_factory=list)
    feedback: Optional[RuleFeedback] = None
    context_passes: int = 0
    rule_passes: int = 0
    ended: Optional[Ending] = None


def run_loop(
    items: Sequence[I], hooks: DecisionHooks[I, P], thresholds: Thresholds, bounds: LoopBounds
) -> list[LoopResult[P]]:
    """One result per item, in order. Each round asks the workflow's hooks once for all the
    events that need another pass, so a batch costs one model call per pass, not per event."""
    events: list[_Event[I, P]] = [_Event(item, PassRequest(item, 1, FIRST)) for item in items]
    while True:
        todo = [e for e in events if e.request is not None]
        if not todo:
            break
        answers = list(hooks.reason([e.request for e in todo]))
        if len(answers) != len(todo):
            raise ValueError(f"reason answered {len(answers)} requests of {len(todo)}")
        judged: list[_Event[I, P]] = []
        for e, answer in zip(todo, answers):
            if answer is None:
                if e.proposal is None:
                    raise ValueError("a first pass must propose something (an explicit no-result at least)")
                e.request, e.ended = None, "no_other_approach"  # the previous pass stands
                continue
            e.proposal = answer
            judged.append(e)
        judgements = list(hooks.judge([e.proposal for e in judged]))
        if len(judgements) != len(judged):
            raise ValueError(f"judge answered {len(judgements)} proposals of {len(judged)}")
        more: list[_Event[I, P]] = []
        for e, j in zip(judged, judgements):
            request, e.request = e.request, None
            route: Route = thresholds.route(j.confidence)  # type: ignore[assignment]
            e.passes.append(Pass(request.number, request.why, j, route, hooks.describe(e.proposal)))
            if j.blocked_by:
                # A hard rule refused: the policy outranks the model's confidence.
                if j.feedback is not None and e.rule_passes < bounds.max_rule_passes:
                    e.rule_passes += 1
                    e.feedback = j.feedback if e.feedback is None else e.feedback.merged(j.feedback)
                    why = f"{RULE_VIOLATED}: {', '.join(j.feedback.names)}"
                    e.request = PassRequest(e.item, request.number + 1, why, e.feedback, e.proposal)
                else:
                    e.ended = "rule_outcome"
            elif route == "ask" and e.context_passes < bounds.max_context_passes:
                more.append(e)
            else:
                e.ended = "confident" if route == "act" else "low_confidence"
        if more:
            reread = list(hooks.read_more([e.item for e in more], [e.proposal for e in more]))
            if len(reread) != len(more):
                raise ValueError(f"read_more answered {len(reread)} items of {len(more)}")
            for e, item in zip(more, reread):
                if item is None:
                    e.ended = "nothing_more_to_read"
                    continue
                e.item, e.context_passes = item, e.context_passes + 1
                e.request = PassRequest(item, e.passes[-1].number + 1, LOW_CONFIDENCE, e.feedback, e.proposal)
    return [LoopResult(e.proposal, tuple(e.passes), e.ended or "low_confidence") for e in events]


# ---- the selected action and the audit -----------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    route: Literal["act", "record", "escalate"]  # act: execute the action plan; record: a decision without one
    decision: str
    reason: str


def settle(result: LoopResult, thresholds: Thresholds, acting: Collection[str]) -> Settlement:
    """The selected action of a finished loop: decisions in `acting` are executed, the
    others recorded; an escalation or a confidence below `act` goes to a person."""
    j = result.judgement
    after = _after_passes(result)
    if j.decision == "escalate":
        why = (
            f"model gave no result: {j.no_result}" if j.no_result else f"escalated by policy: {', '.join(j.blocked_by)}"
        )
        return Settlement("escalate", j.decision, why + after)
    if j.confidence < thresholds.act:
        reason = (
            f"confidence {j.confidence:.2f} below {thresholds.act}"
            + (f" (flagged: {', '.join(j.flagged_by)})" if j.flagged_by else "")
            + (f" (context: {', '.join(j.context_notes)})" if j.context_notes else "")
        )
        return Settlement("escalate", j.decision, reason + after)
    by_policy = f" by policy: {', '.join(j.blocked_by)}" if j.blocked_by else ""
    return Settlement("act" if j.decision in acting else "record", j.decision, j.decision + by_policy + after)


def _after_passes(result: LoopResult) -> str:
    if len(result.passes) == 1 and result.ended != "nothing_more_to_read":
        return ""
    whys = ", ".join(p.why for p in result.passes[1:])
    note = f" after {len(result.passes)} passes ({whys})" if whys else ""
    return note + ("; a broader re-read found nothing new" if result.ended == "nothing_more_to_read" else "")


def final_pass_fields(summary: Optional[Mapping[str, Any]]) -> dict:
    """What the decision record says of the loop: which pass it is, and why the loop ended
    (nothing for a decision made outside the loop)."""
    if not summary:
        return {}
    last = summary["passes"][-1]
    return {"pass": last["pass"], "why": last["why"], "passes": len(summary["passes"]), "loop_ended": summary["ended"]}


def pass_entries(subject: str, summary: Optional[Mapping[str, Any]], batch_id: str | None) -> list[AuditEntry]:
    """One `decision_pass` record per pass before the last (the last is the decision record),
    each saying what the next pass was for."""
    passes = summary["passes"] if summary else []
    return [
        AuditEntry(PASS_KIND, subject, {**p, "of": len(passes), "next": passes[i + 1]["why"]}, batch_id)
        for i, p in enumerate(passes[:-1])
    ]


def with_pass_totals(summary: Mapping[str, Any], fields: Sequence[str]) -> dict[str, float]:
    """Sums over every pass (tokens, cost, latency): what the decision cost, not its last pass."""
    return {f: sum(float(p.get(f) or 0) for p in summary["passes"]) for f in fields}


__all__ = [
    "DecisionHooks",
    "Judgement",
    "LoopBounds",
    "LoopResult",
    "Pass",
    "PassRequest",
    "RuleFeedback",
    "Settlement",
    "ViolatedRule",
    "final_pass_fields",
    "loop_figures",
    "pass_entries",
    "rule_feedback",
    "run_loop",
    "settle",
    "timed",
    "with_pass_totals",
]
