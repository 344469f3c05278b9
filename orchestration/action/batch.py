"""The action layer of any workflow's batch: plan the sagas of the decisions that act, run
them, map every event to exactly one terminal state, and record it (review queue, audit
log, inbox state, in that order), after a batch run as after an approval or a recovery.

What differs between workflows is declared once in an `ActionSpec`: how a decision becomes
a saga's parameters, what a finished saga means, which business refusals are decisions,
which fields of a decision the audit keeps and what a reviewer is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from orchestration.action.saga_executor import BatchOutcome, SagaExecutor
from orchestration.audit.chain import AuditEntry
from orchestration.audit.records import DecisionRecord
from orchestration.decision.guardrail_checks import activation_counts
from orchestration.decision.loop import final_pass_fields, pass_entries

# What every decision record keeps, whatever the workflow: where the decision came from,
# what made it and what it cost, the loop's verdict. A workflow adds its own fields.
DECISION_FIELDS = (
    "entity_key",
    "event",
    "context_hash",
    "model",
    "model_version",
    "prompt_version",
    "decision_type",
    "route_reason",
    "latency_s",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cache_hit",
    "probabilities",
    "confidence",
    "confidence_breakdown",
    "calibrator_version",
    "guardrails",
    "route",
    "reason",
)


def action_key(event_key: str, step: str) -> str:
    """The idempotency key of one action on one event: replays reuse it, so act once."""
    return f"{step}:{event_key}"


@dataclass(frozen=True)
class ActionSpec:
    """How a workflow's decisions become actions and outcomes."""

    workflow: str
    # A decision that acts -> its saga's parameters (kept in the saga log: recovery needs
    # nothing else); the saga's id is the event's key.
    saga_params: Callable[[dict], dict]
    # The outcome of an event whose saga finished, and its reason ("paid", "assigned").
    done_outcome: Callable[[str], dict]
    done_reason: str
    # A prerequisite's business refusal (its code) -> the decision the event ends with.
    refusal_decisions: Mapping[str, str] = field(default_factory=dict)
    # The workflow's own fields of a decision, kept in its audit record beside DECISION_FIELDS.
    decision_fields: Sequence[str] = ()
    # What a reviewer sees of an escalated decision (beside its decision and proposal).
    review_proposal: Callable[[dict], dict] = lambda d: {}
    acting_route: str = "act"
    acting_label: str = "approve"  # the decision that acts (what approving an escalation means)

    def plan(self, decisions: Sequence[dict]) -> list[dict]:
        return [self.saga_params(d) for d in decisions if d["route"] == self.acting_route]


def execute(
    decisions: Sequence[dict], executor: SagaExecutor, spec: ActionSpec, batch_id: str, preview: bool = False
) -> BatchOutcome:
    """The batch's sagas; a saga already in the log is resumed from it, whatever a
    recomputed decision says, so a replay after a crash finishes what was started."""
    items = spec.plan(decisions)
    if preview:
        return executor.run(items, batch_id, preview=True)
    planned = {it["key"] for it in items}
    logged = executor.log.load([d["key"] for d in decisions if d["key"] not in planned])
    return executor.run(items + [row["params"] for row in logged.values()], batch_id)


def refusal_state(key: str, refusal: dict, spec: ActionSpec, note: str | None = None) -> dict:
    """An event's terminal state for a saga a prerequisite refused for a business reason."""
    return {
        "key": key,
        "status": "done",
        "reason": f"refused at execution ({refusal['code']}): {refusal['reason']}" + (f" ({note})" if note else ""),
        "outcome": {"decision": spec.refusal_decisions.get(refusal["code"], "reject"), "refusal": refusal["code"]},
    }


def refusal_audit(state: dict) -> dict:
    """What an outcome audit record adds for a business refusal: the decision and the rule."""
    outcome = state.get("outcome") or {}
    return {"decision": outcome["decision"], "refusal": outcome["refusal"]} if outcome.get("refusal") else {}


def _failed_state(k: str, f: dict) -> dict:
    if f.get("failed_step") == "approval":  # a reviewer refused the plan: nothing acted
        return {"key": k, "status": "done", "reason": f["error"], "outcome": {"decision": "reject"}}
    if f.get("compensation_error"):  # a half-undone saga needs a person, not a retry
        return {
            "key": k,
            "status": "escalated",
            "reason": f"rollback failed after {f['failed_step']}: {f['compensation_error']}",
        }
    tries = f.get("attempts")
    return {
        "key": k,
        "status": "dead_lettered",
        "attempts": tries or 1,
        "reason": f"{f['failed_step']} failed"
        + (f" after {tries} attempt(s)" if tries else "")
        + f": {f['error']}; compensated: {', '.join(f['compensated']) or 'nothing to undo'}",
    }


def outcomes(decisions: Sequence[dict], sagas: BatchOutcome, spec: ActionSpec) -> list[dict]:
    """Exactly one terminal state per event; none yet for a saga deferred to a later run."""
    states = []
    done = set(sagas.done)
    for d in decisions:
        k = d["key"]
        if k in sagas.deferred or k in sagas.unfinished:
            continue  # stays "received": the batch's next run (or `bosun saga recover`) finishes it
        if k in sagas.awaiting_approval:
            states.append(
                {"key": k, "status": "escalated", "reason": f"awaiting approval: {sagas.awaiting_approval[k]}"}
            )
        elif k in sagas.refused:  # a business reason at execution time: a decision, not a dead letter
            states.append(refusal_state(k, sagas.refused[k], spec))
        elif k in sagas.failed:
            states.append(_failed_state(k, sagas.failed[k]))
        elif k in done:
            states.append({"key": k, "status": "done", "reason": spec.done_reason, "outcome": spec.done_outcome(k)})
        elif d["route"] == "escalate":
            states.append({"key": k, "status": "escalated", "reason": d["reason"]})
        else:  # decided without an action (reject, hold, no reply needed): recorded
            states.append(
                {"key": k, "status": "done", "reason": d["reason"], "outcome": {"decision": d["final_decision"]}}
            )
    return states


def settled_states(outcome: BatchOutcome, note: str, spec: ActionSpec) -> list[dict]:
    """The terminal states of sagas settled outside a batch run (an approval, a recovery)."""
    states = [
        {"key": k, "status": "done", "reason": f"{spec.done_reason} ({note})", "outcome": spec.done_outcome(k)}
        for k in outcome.done
    ]
    states += [refusal_state(k, r, spec, note) for k, r in outcome.refused.items()]
    for k, f in outcome.failed.items():
        status = "escalated" if f.get("compensation_error") else "dead_lettered"
        reason = f"{f['failed_step']} failed: {f.get('compensation_error') or f['error']} ({note})"
        states.append({"key": k, "status": status, "reason": reason})
    return states


def step_entries(
    rows: Sequence[dict], batch_id: str | None, extra: Mapping[str, Any] | None = None
) -> list[AuditEntry]:
    """One audit record per saga step the log reports (an action, or its compensation)."""
    return [
        AuditEntry(
            "compensation" if row["status"] in ("compensated", "compensation_failed") else "action",
            row["key"],
            {
                "step": row["step"],
                "status": row["status"],
                "error": row.get("error"),
                "action_key": action_key(row["key"], row["step"]),
                **(extra or {}),
            },
            batch_id,
        )
        for row in rows
    ]


def outcome_entry(state: dict, batch_id: str | None, extra: Mapping[str, Any] | None = None) -> AuditEntry:
    body = {"status": state["status"], "reason": state["reason"], **refusal_audit(state), **(extra or {})}
    return AuditEntry("outcome", state["key"], body, batch_id)


def decision_entry(d: dict, spec: ActionSpec, batch_id: str) -> AuditEntry:
    """The event's decision with what it was made from (the context layer's guarded copy:
    untrusted fields already redacted), as it was, not as the sources say later: retraining,
    the decision report and `bosun replay` learn from it."""
    body = {f: d[f] for f in DECISION_FIELDS if d.get(f) is not None}
    body.update(
        {
            "proposed": d["decision"],
            "decision": d["final_decision"],
            "re_retrieved": d.get("re_retrieved", False),
            **{f: d.get(f) for f in spec.decision_fields},
            **final_pass_fields(d.get("decision_loop")),
        }
    )
    # Validated on the way in: a workflow writing a field of the wrong shape fails its batch
    # here, not a reader of the audit a year later.
    return AuditEntry("decision", d["key"], DecisionRecord.model_validate(body).body(), batch_id)


def audit_entries(
    decisions: Sequence[dict], sagas: BatchOutcome, states: Sequence[dict], batch_id: str, spec: ActionSpec
) -> Iterator[AuditEntry]:
    """Per event: every pass of the decision loop, the decision, every action, the end state.
    Made as the audit log consumes them (a batch's records are not all held at once)."""
    steps_by_key: dict[str, list[dict]] = {}
    for row in sagas.log:
        steps_by_key.setdefault(row["key"], []).append(row)
    state_by_key = {s["key"]: s for s in states}
    for d in decisions:
        k = d["key"]
        yield from pass_entries(k, d.get("decision_loop"), batch_id)  # every pass before the last
        yield decision_entry(d, spec, batch_id)
        yield from step_entries(steps_by_key.get(k, []), batch_id)
        if k in state_by_key:
            yield outcome_entry(state_by_key[k], batch_id)
    # Per guardrail, how often it fired in this batch: the audit answers "how often did
    # rule X stop an action last month" without re-reading every decision.
    yield AuditEntry("guardrail_activations", batch_id, activation_counts(decisions), batch_id)


def review_items(decisions: Sequence[dict], spec: ActionSpec) -> list[dict]:
    """The escalated decisions, as the review queue takes them."""
    return [
        {
            "key": d["key"],
            "entity_key": d["entity_key"],
            "confidence": d["confidence"],
            "reason": d["reason"],
            "proposal": {
                "decision": d["final_decision"],
                "proposed": d["decision"],
                "guardrails": d["guardrails"],
                **spec.review_proposal(d),
            },
        }
        for d in decisions
        if d["route"] == "escalate"
    ]


def record_settled(
    resources: Mapping[str, Any],
    outcome: BatchOutcome,
    note: str,
    spec: ActionSpec,
    batch_id: Optional[str] = None,
    extra: Optional[dict] = None,
) -> int:
    """After an approval or a recovery outside a batch run: the actions and the events'
    terminal states, audited once (`extra`, e.g. the review id, on each record), then the
    inbox; `batch_id`, when known, stays on the event."""
    states = settled_states(outcome, note, spec)
    extra = {"note": note, **(extra or {})}
    entries = step_entries(outcome.log, batch_id, extra)
    # The outcome records carry the note in their reason already.
    entries += [outcome_entry(st, batch_id, {k: v for k, v in extra.items() if k != "note"}) for st in states]
    if entries:
        resources["bosun_db"].audit().append(entries)
    resources["bosun_db"].inbox().set_states(states, batch_id)
    return len(states)


def count_by_status(states: Sequence[dict]) -> dict[str, int]:
    by_status: dict[str, int] = {}
    for s in states:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    return dict(sorted(by_status.items()))


def saga_counts(planned: int, sagas: BatchOutcome) -> dict[str, int]:
    """The batch's sagas in figures (zero in most batches: in the run's details, not plotted)."""
    return {
        "planned": planned,
        "done": len(sagas.done),
        "saga_failures": len(sagas.failed),
        "refused_at_execution": len(sagas.refused),
        "deferred": len(sagas.deferred),
        "awaiting_approval": len(sagas.awaiting_approval),
        "in_doubt": len(sagas.unfinished),
        "compensated": sum(1 for f in sagas.failed.values() if f["compensated"]),
    }
