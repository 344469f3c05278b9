"""Reconcile a batch's recorded outcomes, its saga log and the target systems' state.

Three records of the same truth are compared, none trusted over the others:

- the events' terminal states (what the workflow says it did: acted, or not);
- the saga log (which steps ran, which were undone, why a saga stopped);
- the target's rows (what actually exists there, found by idempotency key and by entity).

Workflow-free: a workflow supplies its steps, how a step's idempotency key is made from a
saga id (and back), what each event's effect should look like (amount, currency, ...),
and the target's rows for the batch. Anything changed at the target behind the saga's
back (a payment cancelled, an amount edited, a row inserted by hand) shows up as a
discrepancy naming the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

from orchestration.action.saga_log import ACTIVE

# Saga statuses that may leave live effects: done, and escalated (a rollback failed, a
# person is on it: the review queue has it with its reason).
_MAY_BE_LIVE = ("done", "escalated")


@dataclass(frozen=True)
class Effect:
    """One row at the target: its idempotency key, whether it is in effect, its values."""

    key: str
    live: bool
    entity: str
    values: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """What the workflow recorded for one event of the batch."""

    key: str
    state: str  # the event's state (received, done, escalated, ...)
    entity: str  # the entity its effects concern (e.g. a customer's request)
    claims_effect: bool  # the recorded outcome says the action took place
    expected: Mapping[str, object] = field(default_factory=dict)  # values every effect must carry


@dataclass(frozen=True)
class Discrepancy:
    event: str | None
    kind: str
    detail: str
    step: str | None = None
    target_key: str | None = None

    def as_dict(self) -> dict:
        return {
            k: v
            for k, v in (
                ("event", self.event),
                ("kind", self.kind),
                ("step", self.step),
                ("target_key", self.target_key),
                ("detail", self.detail),
            )
            if v is not None
        }


@dataclass
class Reconciliation:
    events: int = 0
    by_saga_status: dict[str, int] = field(default_factory=dict)
    live_effects: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def events_named(self) -> list[str]:
        return sorted({d.event or d.target_key or "" for d in self.discrepancies})

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.discrepancies:
            out[d.kind] = out.get(d.kind, 0) + 1
        return dict(sorted(out.items()))


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except ArithmeticError:
        return str(a) == str(b)


def reconcile(
    events: Iterable[EventRecord],
    sagas: Mapping[str, dict],
    steps: Sequence[str],
    step_key: Callable[[str, str], str],
    saga_of_key: Callable[[str], tuple[str, str] | None],
    effects: Iterable[Effect],
    settled_elsewhere: Mapping[str, dict] | None = None,
) -> Reconciliation:
    """events: the batch's events; sagas: saga_id -> SagaLog.load() row (saga id = event key);
    effects: the target's rows for the batch (by the batch's keys and by its entities);
    settled_elsewhere: saga rows of other batches the target's keys point to."""
    out = Reconciliation()
    by_key = {e.key: e for e in effects}
    known_sagas = {**(settled_elsewhere or {}), **sagas}
    events = list(events)
    out.events = len(events)
    out.live_effects = sum(1 for e in by_key.values() if e.live)
    add = out.discrepancies.append

    for ev in events:
        saga = sagas.get(ev.key)
        status = saga["status"] if saga else "none"
        out.by_saga_status[status] = out.by_saga_status.get(status, 0) + 1
        live_steps = {
            s: by_key[step_key(ev.key, s)]
            for s in steps
            if step_key(ev.key, s) in by_key and by_key[step_key(ev.key, s)].live
        }
        if saga is None:
            if ev.claims_effect:
                add(
                    Discrepancy(
                        ev.key,
                        "acted_without_saga",
                        f"recorded as {ev.state} with an effect, but the saga log has no saga for it",
                    )
                )
            for s, eff in live_steps.items():
                add(
                    Discrepancy(
                        ev.key,
                        "live_effect_without_saga",
                        f"{s} is in effect at the target but no saga acted for this event ({ev.state})",
                        s,
                        eff.key,
                    )
                )
            continue
        if status in ACTIVE:
            add(Discrepancy(ev.key, "saga_unsettled", f"saga still {status} after the batch ran"))
            continue
        if status == "done":
            for s in steps:
                state = saga["steps"].get(s, ("missing", None))[0]
                if state == "skipped":  # a conditional step its params did not call for: no effect
                    eff = by_key.get(step_key(ev.key, s))
                    if eff is not None and eff.live:
                        add(
                            Discrepancy(
                                ev.key,
                                "live_effect_of_skipped_step",
                                f"saga step {s} was skipped but is in effect at the target",
                                s,
                                eff.key,
                            )
                        )
                    continue
                if state != "done":
                    add(Discrepancy(ev.key, "done_saga_with_unfinished_step", f"saga done but step {s} is {state}", s))
                eff = by_key.get(step_key(ev.key, s))
                if eff is None or not eff.live:
                    add(
                        Discrepancy(
                            ev.key,
                            "effect_missing",
                            f"saga step {s} is done but the target has "
                            + ("no such row" if eff is None else "it voided"),
                            s,
                            step_key(ev.key, s),
                        )
                    )
                    continue
                wrong = {f: (eff.values.get(f), v) for f, v in ev.expected.items() if not _same(eff.values.get(f), v)}
                if wrong:
                    add(
                        Discrepancy(
                            ev.key,
                            "effect_mismatch",
                            "; ".join(
                                f"{f} is {got} at the target, decided {want}"
                                for f, (got, want) in sorted(wrong.items())
                            ),
                            s,
                            eff.key,
                        )
                    )
            if not ev.claims_effect and ev.state != "received":
                add(
                    Discrepancy(
                        ev.key,
                        "effect_not_recorded",
                        f"saga done but the event is recorded as {ev.state} without its effect",
                    )
                )
            continue
        # compensated, failed (refused before acting), escalated, awaiting_approval
        if not (saga.get("reason") or "").strip():
            add(Discrepancy(ev.key, "settled_without_reason", f"saga {status} without a reason"))
        if ev.claims_effect:
            add(
                Discrepancy(
                    ev.key,
                    "effect_claimed_but_saga_not_done",
                    f"recorded as {ev.state} with an effect, but its saga is {status}",
                )
            )
        if status not in _MAY_BE_LIVE:
            for s, eff in live_steps.items():
                add(
                    Discrepancy(
                        ev.key,
                        "live_effect_after_saga_" + status,
                        f"{s} is still in effect at the target though the saga is {status}",
                        s,
                        eff.key,
                    )
                )

    # Rows at the target no saga accounts for: written by hand, or by a saga the log does not
    # know. Keys of this batch's events were judged above; a row of another batch's saga is
    # judged by that batch's check (it may be in flight right now in a concurrent run).
    batch_keys = {step_key(ev.key, s) for ev in events for s in steps}
    for eff in by_key.values():
        if not eff.live or eff.key in batch_keys:
            continue
        owner = saga_of_key(eff.key)
        if owner is None or owner[0] not in known_sagas:
            add(
                Discrepancy(
                    owner[0] if owner else None,
                    "live_effect_without_saga_step",
                    f"{eff.entity}: row {eff.key} is in effect at the target and no saga wrote it",
                    owner[1] if owner else None,
                    eff.key,
                )
            )
    return out


def metadata(rec: Reconciliation, limit: int = 20) -> dict:
    """Counts, the events named, a few discrepancies in full: what an operator opens first."""
    return {
        "events": rec.events,
        "live_effects": rec.live_effects,
        "discrepancies": len(rec.discrepancies),
        "saga_status": rec.by_saga_status,
        "discrepancies_by_kind": rec.by_kind(),
        "events_with_discrepancies": rec.events_named()[:100],
        "examples": [d.as_dict() for d in rec.discrepancies[:limit]],
    }


def batch_effects(
    rows: Iterable[Mapping[str, Any]],
    keys: Sequence[str],
    events: Sequence[EventRecord],
    entity: Callable[[Mapping[str, Any]], str],
    values: Sequence[str],
    key: str = "idempotency_key",
) -> list[Effect]:
    """A target's rows (each with its `key` and `live`) as the batch's effects: those under one
    of its action keys or about one of its events' entities, with their `values`. A row read by
    a coarser column than the entity (a document number two senders share) may be another
    entity's, not the batch's."""
    entities, wanted = {e.entity for e in events}, set(keys)
    return [
        Effect(r[key], r["live"], entity(r), {v: r[v] for v in values})
        for r in rows
        if entity(r) in entities or r[key] in wanted
    ]


def reconcile_batch_with_targets(
    batch_key: str,
    bosun_db: Any,
    event_types: Sequence[str],
    steps: Sequence[str],
    event_record: Callable[[dict], EventRecord],
    effects_of: Callable[[list[str], list[EventRecord]], Iterable[Effect]],
) -> Reconciliation:
    """`reconcile` for one batch as every workflow does it: its events' recorded outcomes
    (`event_record` of each inbox row), its sagas in the log, and the targets' rows that
    `effects_of(action keys, events)` finds by the batch's keys and by its entities; the saga
    of another batch that a row's key points to is read too (the entity acted on earlier)."""
    from orchestration.action.batch import action_key
    from orchestration.action.saga_log import SagaLog

    events = [event_record(r) for r in bosun_db.inbox().batch_records(batch_key, list(event_types))]
    log = SagaLog(bosun_db.resolved_url)
    sagas = log.load([e.key for e in events])
    effects = list(effects_of([action_key(e.key, s) for e in events for s in steps], events))

    def saga_of_key(key: str) -> tuple[str, str] | None:
        step, _, saga_id = key.partition(":")
        return (saga_id, step) if step in steps and saga_id else None

    others = sorted({o[0] for e in effects if (o := saga_of_key(e.key)) and o[0] not in sagas})
    return reconcile(
        events, sagas, steps, action_key, saga_of_key, effects, settled_elsewhere=log.load(others) if others else {}
    )
