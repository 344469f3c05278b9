"""The durable saga executor: a batch of sagas driven from, and recorded in, the saga log.

Every step acts on all sagas still in flight with a few calls (chunks of the action's
`max_items_per_call`), each call rate-limited, timed out and retried by the action's
policy. Before acting the step is logged `running`, after acting `done` or `failed`: a
process that dies in between leaves `running`, and whoever resumes asks the target
(`verify`) whether the effect landed before acting again, and the target's idempotency
keys make a repeated write a no-op anyway. Failed sagas are compensated in reverse
order and the compensation is verified; one that cannot be undone escalates to a human.

A step may be conditional (`PlanStep(..., when=...)`): for a saga whose logged params do
not meet its condition it is logged `skipped` when the saga reaches it, and never called,
verified or compensated; the steps after it run (see `SagaExecutor._skip`).
"""

from __future__ import annotations

import contextlib
import graphlib
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

from orchestration.action.actions import ActionType, call_with_timeout, describe
from orchestration.action.leases import Leases
from orchestration.action.rate_limit import RateLimiter
from orchestration.action.saga_log import ACTIVE, SagaLog
from orchestration.review.queue import ReviewQueue


@dataclass(frozen=True)
class When:
    """A step's condition, read from the saga's params alone: `bool(params[param])`, or
    `params[param] == equals` when `equals` is given; `negate` turns it around.

    Declarative on purpose, not a callable: a saga may be resumed by another process (a
    recovery, `bosun saga recover`, an approval answered days later) that has nothing but the
    params stored in the saga log, so the condition must be decidable from those alone and
    must not read the clock or a target. It is also data, so a preview or an approval item
    can show it. It is evaluated on the params as the log stores them (JSON), so a value
    that changes under a JSON round trip (a tuple, a Decimal) decides the same everywhere."""

    param: str
    equals: object = None  # None: the param's truthiness
    negate: bool = False

    def holds(self, params: dict) -> bool:
        value = params.get(self.param)
        met = bool(value) if self.equals is None else value == self.equals
        return met != self.negate

    def __str__(self) -> str:
        if self.equals is None:
            return f"not {self.param}" if self.negate else self.param
        return f"{self.param} {'!=' if self.negate else '=='} {json.dumps(self.equals, default=str)}"


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan. `when` (a `When`, or a param name as short for `When(name)`):
    the step runs only for sagas whose params meet it; for the others it is logged
    `skipped` and never called, verified or compensated."""

    name: str
    action: ActionType
    after: tuple[str, ...] = ()
    when: When | str | None = None

    def __post_init__(self):
        if isinstance(self.when, str):
            object.__setattr__(self, "when", When(self.when))
        elif self.when is not None and not isinstance(self.when, When):
            raise TypeError(
                f"step {self.name}: `when` is a param name or a When, not {type(self.when).__name__} "
                "(a callable is not in the saga log: a resumed saga could not decide it the same way)"
            )

    def applies(self, params: dict) -> bool:
        """Whether the step runs for a saga with these (logged) params."""
        return self.when is None or self.when.holds(params)


def as_logged(params: dict) -> dict:
    """The params as the saga log gives them back (a JSON round trip): every decision on
    them, in a preview or in the process that runs the saga, is made on this form."""
    return json.loads(json.dumps(params, default=str))


class SagaPlan:
    """The steps of a saga as a small DAG; executed in a topological order, undone in reverse."""

    def __init__(self, steps: Sequence[PlanStep]):
        self.steps = {s.name: s for s in steps}
        graph = {s.name: set(s.after) for s in steps}
        unknown = {d for deps in graph.values() for d in deps} - set(graph)
        if unknown:
            raise ValueError(f"steps depend on unknown steps: {sorted(unknown)}")
        self.order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle

    def dependents(self, name: str) -> set[str]:
        out, frontier = set(), {name}
        while frontier:
            nxt = {s.name for s in self.steps.values() if set(s.after) & frontier} - out
            out |= nxt
            frontier = nxt
        return out

    def describe(self, params: dict) -> dict:
        """The plan for these params; a conditional step says its condition and whether it
        is skipped for them (unconditional steps keep the shape they always had)."""
        logged = as_logged(params)
        steps = []
        for n in self.order:
            step = self.steps[n]
            row = {
                "step": n,
                "action": step.action.name,
                "after": list(step.after),
                "idempotency_key": step.action.key(params["key"]),
            }
            if step.when is not None:
                row["when"] = str(step.when)
                row["skipped"] = not step.applies(logged)
            steps.append(row)
        return {"saga": params["key"], "steps": steps}


@dataclass(frozen=True)
class Refusal:
    """A prerequisite that does not hold for a business reason (the entity was acted on
    by a concurrent batch, a record it draws on was closed meanwhile): the saga does not act and
    the event ends with the decision the workflow maps `code` to, recorded and audited. A
    plain string from `prerequisites` stays a failure: a dead letter, for a person."""

    code: str  # which rule refused, e.g. "already_paid"; kept as the saga's failed_step
    reason: str


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    # key -> {"failed_step", "error", "compensated": [steps], "compensation_error", "attempts"}
    failed: dict[str, dict] = field(default_factory=dict)
    # key -> {"code", "reason"}: refused by a prerequisite for a business reason (a decision, not a failure)
    refused: dict[str, dict] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # per item and step, for the audit log
    deferred: list[str] = field(default_factory=list)  # another run holds an entity; retried later
    unfinished: list[str] = field(default_factory=list)  # in doubt and unverifiable now; recover later
    awaiting_approval: dict[str, str] = field(default_factory=dict)
    preview: list[dict] = field(default_factory=list)


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


class SagaExecutor:
    def __init__(
        self,
        log: SagaLog,
        workflow: str,
        plan: SagaPlan,
        *,
        limiters: dict[str, RateLimiter | None] | None = None,
        leases: Leases | None = None,
        entities: Callable[[dict], list[str]] | None = None,
        prerequisites: Callable[[list[dict]], dict[str, "str | Refusal"]] | None = None,
        approval: Callable[[dict], str | None] | None = None,
        review: ReviewQueue | None = None,
        lease_wait_s: float = 10.0,
    ):
        self.log, self.workflow, self.plan = log, workflow, plan
        self.limiters, self.leases, self.entities = limiters or {}, leases, entities
        self.prerequisites, self.approval, self.review = prerequisites, approval, review
        self.lease_wait_s = lease_wait_s
        for step in plan.steps.values():  # one bucket per target, shared through the database
            a = step.action
            if a.target and a.rate_limit and a.target not in self.limiters:
                self.limiters[a.target] = RateLimiter(log.url, a.target, a.rate_limit)

    # ---- entry points ----------------------------------------------------------------
    def run(self, items: list[dict], batch_id: str | None = None, preview: bool = False) -> BatchOutcome:
        """Plan, then execute every saga of the batch not settled yet (a replay resumes)."""
        out = BatchOutcome()
        if preview:
            out.preview = [self.plan.describe(it) for it in items]
            return out
        gated = {it["key"]: reason for it in items if self.approval and (reason := self.approval(it))}
        self.log.plan(
            self.workflow, batch_id, items, self.plan.order, {k: ("awaiting_approval", r) for k, r in gated.items()}
        )
        self._submit_for_approval(items, gated, batch_id)
        return self._execute([it["key"] for it in items], out)

    def recover(self, batch_id: str | None = None) -> BatchOutcome:
        """Resume or compensate every unfinished saga of this workflow from the log."""
        ids = [r["saga_id"] for r in self.log.unfinished(self.workflow, batch_id)]
        return self._execute(ids, BatchOutcome())

    def execute(self, saga_ids: list[str]) -> BatchOutcome:
        return self._execute(saga_ids, BatchOutcome())

    def rollback(self, saga_id: str, steps: list[str] | None = None) -> BatchOutcome:
        """Undo chosen steps of a saga (and every step that depends on them), verified."""
        chosen = set(steps or self.plan.order)
        unknown = chosen - set(self.plan.order)
        if unknown:
            raise ValueError(f"unknown steps: {sorted(unknown)}")
        for s in list(chosen):
            chosen |= self.plan.dependents(s)
        out = BatchOutcome()
        with self._leased([saga_id], out) as ids:
            if not ids:
                return out
            state = self.log.load(ids)
            reason = f"rollback requested of {', '.join(s for s in self.plan.order if s in chosen)}"
            self._compensate(ids, state, out, {saga_id: ("rollback", reason)}, only=chosen)
        return out

    # ---- the engine -------------------------------------------------------------------
    def _execute(self, saga_ids: list[str], out: BatchOutcome) -> BatchOutcome:
        state = self.log.load(saga_ids)
        active = [k for k in saga_ids if k in state and state[k]["status"] in ACTIVE]
        with self._leased(active, out, state) as held:
            if self.leases is not None and held:
                # Reloaded under the lease: another run may have settled them meanwhile.
                state.update(self.log.load(held))
            self._report_settled([k for k in saga_ids if k not in out.deferred], state, out)
            self._drive([k for k in held if state[k]["status"] in ACTIVE], state, out)
        return out

    @contextlib.contextmanager
    def _leased(self, saga_ids: list[str], out: BatchOutcome, state: dict | None = None):
        """Yield the sagas whose every entity this run now leases; the rest are deferred."""
        if not (self.leases and self.entities and saga_ids):
            yield list(saga_ids)
            return
        known = state if state is not None else self.log.load(saga_ids)
        ents = {k: self.entities(known[k]["params"]) for k in saga_ids if k in known}
        wanted = sorted({e for es in ents.values() for e in es})
        try:
            got = self.leases.acquire(wanted, self.lease_wait_s)
            ok = [k for k in saga_ids if k in ents and set(ents[k]) <= got]
            out.deferred += [k for k in saga_ids if k not in ok]
            with self.leases.kept_alive():
                yield ok
        finally:
            self.leases.release(wanted)

    def _report_settled(self, saga_ids: list[str], state: dict, out: BatchOutcome) -> None:
        for k in saga_ids:
            s = state.get(k)
            if s is None or s["status"] in ACTIVE:
                continue
            steps = s["steps"]
            if s["status"] == "awaiting_approval":
                out.awaiting_approval[k] = s["reason"] or "approval required"
                continue
            if s["status"] == "refused":
                out.refused[k] = {"code": s["failed_step"], "reason": s["reason"]}
                continue
            for name in self.plan.order:
                st, err = steps.get(name, ("planned", None))
                if st == "skipped":
                    out.log.append({"key": k, "step": name, "status": "skipped", "error": None, "reason": err})
                if st in ("done", "compensating", "compensated"):
                    out.log.append({"key": k, "step": name, "status": "done", "error": None})
                if st == "compensated":
                    out.log.append({"key": k, "step": name, "status": "compensated", "error": None})
            if s["status"] == "done":
                out.done.append(k)
            else:
                out.failed[k] = {
                    "failed_step": s["failed_step"],
                    "error": s["reason"],
                    "compensated": [n for n in reversed(self.plan.order) if steps.get(n, ("",))[0] == "compensated"],
                }
                if s["status"] == "escalated":
                    out.failed[k]["compensation_error"] = s["reason"]

    def _drive(self, ids: list[str], state: dict, out: BatchOutcome) -> None:
        def st(k, step):
            return state[k]["steps"].get(step, ("planned", None))[0]

        backward = [
            k for k in ids if state[k]["status"] == "compensating" or any(st(k, n) == "failed" for n in self.plan.order)
        ]
        forward = [k for k in ids if k not in backward]
        why: dict[str, tuple[str, str]] = {}
        for k in backward:  # a process that died before logging "compensating" left the reason on the step
            failed = [(n, state[k]["steps"][n][1]) for n in self.plan.order if st(k, n) == "failed"]
            step, err = failed[0] if failed else ("", "")
            why[k] = (state[k]["failed_step"] or step, state[k]["reason"] or err or "")
        fresh = [k for k in forward if all(st(k, n) == "planned" for n in self.plan.order)]
        if self.prerequisites and fresh:
            refused = self.prerequisites([state[k]["params"] for k in fresh])
            if refused:
                self.log.set_status(
                    {
                        k: ("refused", r.code, r.reason) if isinstance(r, Refusal) else ("failed", "prerequisites", r)
                        for k, r in refused.items()
                    }
                )
                for k, r in refused.items():
                    if isinstance(r, Refusal):
                        out.refused[k] = {"code": r.code, "reason": r.reason}
                    else:
                        out.failed[k] = {"failed_step": "prerequisites", "error": r, "compensated": []}
                forward = [k for k in forward if k not in refused]
        self.log.set_status({k: ("running", None, None) for k in forward}, only_if=("planned",))
        # A step whose call failed as a whole may still land late (a timed-out request):
        # it is compensated too, which consumes its key at the target.
        also_undo: dict[str, str] = {}
        for name in self.plan.order:
            todo = [k for k in forward if st(k, name) not in ("done", "skipped")]
            todo = self._skip(name, todo, state, out)
            if not todo:
                continue
            if self.leases is not None and self.entities is not None:
                # The fence: a saga whose lease lapsed (this process stalled past the TTL)
                # may now be another run's; it is deferred, not acted on, and resumes later.
                held = self.leases.renew()
                lost = [k for k in todo if not set(self.entities(state[k]["params"])) <= held]
                if lost:
                    out.deferred += lost
                    forward = [k for k in forward if k not in lost]
                    todo = [k for k in todo if k not in lost]
                    if not todo:
                        continue
            errors, in_doubt, uncertain = self._act(name, todo, state, out)
            out.unfinished += in_doubt
            forward = [k for k in forward if k not in errors and k not in in_doubt]
            for k, err in errors.items():
                backward.append(k)
                why[k] = (name, err)
            also_undo.update({k: name for k in uncertain})
        self.log.set_status({k: ("done", None, None) for k in forward})
        out.done += forward
        if backward:
            self._compensate(backward, state, out, why, also_undo=also_undo)

    def _skip(self, name: str, keys: list[str], state: dict, out: BatchOutcome) -> list[str]:
        """Log `skipped` for the sagas whose params do not meet the step's condition; the
        rest still to act. Decided once, when a saga first reaches the step, from the params
        in the log (`state` is read from it), and recorded before any later step acts: a
        process resuming the saga finds the decision in the log, and a step still `planned`
        is decided from the same logged params, so every process decides alike. A step
        already `running` was decided to run by an earlier process and is verified as usual.

        The steps after a skipped one run as if it were satisfied: `after=` orders effects
        ("not before that one, if it happens"), and the condition belongs to the step that
        declares it. A step that must not run either declares the same `when`, which keeps
        what runs visible step by step in the plan instead of following from the graph."""
        step = self.plan.steps[name]
        if step.when is None:
            return keys
        skipped = [
            k
            for k in keys
            if state[k]["steps"].get(name, ("planned",))[0] == "planned" and not step.applies(state[k]["params"])
        ]
        if not skipped:
            return keys
        reason = f"condition not met: {step.when}"
        self.log.set_steps(name, {k: ("skipped", reason) for k in skipped}, only_if=("planned",))
        for k in skipped:
            state[k]["steps"][name] = ("skipped", reason)
            out.log.append({"key": k, "step": name, "status": "skipped", "error": None, "reason": reason})
        gone = set(skipped)
        return [k for k in keys if k not in gone]

    def _act(
        self, name: str, keys: list[str], state: dict, out: BatchOutcome
    ) -> tuple[dict[str, str], list[str], set[str]]:
        """One step for many sagas: logged running, acted, logged done/failed in bulk."""
        action = self.plan.steps[name].action
        doubtful = [k for k in keys if state[k]["steps"].get(name, ("planned",))[0] == "running"]
        applied: set[str] = set()
        if doubtful:  # a previous process died between acting and recording
            applied = self._verified(action, doubtful, state) or set()
        self.log.set_steps(name, {k: ("running", None) for k in keys if k not in applied})
        errors: dict[str, str] = {}
        in_doubt: list[str] = []
        uncertain: set[str] = set()
        items = [self._item(action, k, state) for k in keys if k not in applied]
        for chunk in _chunks(items, action.max_items_per_call):
            try:
                refused = self._call(action, action.do, chunk)
                by_key = {it["key"]: it["saga_id"] for it in chunk}
                errors.update({by_key.get(key, key): err for key, err in (refused or {}).items()})
            except Exception as exc:  # the call failed as a whole: did any of it land?
                landed = self._verified(action, [it["saga_id"] for it in chunk], state)
                if landed is None:
                    in_doubt += [it["saga_id"] for it in chunk]
                    continue
                failed_now = {it["saga_id"]: describe(exc) for it in chunk if it["saga_id"] not in landed}
                # How many times the target was tried: the dead-letter record says so.
                tries = action.retry.attempts if action.retry.retryable(exc) else 1
                for k in failed_now:
                    state[k]["attempts"] = tries
                errors.update(failed_now)
                uncertain |= set(failed_now)
        done = [k for k in keys if k not in errors and k not in in_doubt]
        self.log.set_steps(name, {**{k: ("done", None) for k in done}, **{k: ("failed", e) for k, e in errors.items()}})
        for k in keys:
            state[k]["steps"][name] = (
                ("done", None) if k in done else (("failed", errors[k]) if k in errors else ("running", None))
            )
            if k not in in_doubt:
                out.log.append(
                    {"key": k, "step": name, "status": "failed" if k in errors else "done", "error": errors.get(k)}
                )
        return errors, in_doubt, uncertain

    def _compensate(
        self,
        keys: list[str],
        state: dict,
        out: BatchOutcome,
        why: dict[str, tuple[str, str]],
        only: set[str] | None = None,
        also_undo: dict[str, str] | None = None,
    ) -> None:
        """Undo completed steps in reverse order, verify each undo, settle or escalate."""
        self.log.set_status({k: ("compensating", *why.get(k, ("", ""))) for k in keys})
        broken: dict[str, str] = {}
        undone: dict[str, list[str]] = {k: [] for k in keys}
        for name in reversed(self.plan.order):
            if only is not None and name not in only:
                continue
            action = self.plan.steps[name].action
            # Only what may have acted is undone: a `skipped` or `planned` step never did.
            todo = [
                k
                for k in keys
                if k not in broken
                and (
                    state[k]["steps"].get(name, ("planned",))[0] in ("done", "compensating", "running")
                    or (also_undo or {}).get(k) == name
                )
            ]
            if not todo:
                continue
            was_done = {k for k in todo if state[k]["steps"][name][0] == "done"}
            self.log.set_steps(name, {k: ("compensating", None) for k in todo})
            raised: dict[str, str] = {}
            for chunk in _chunks([self._item(action, k, state) for k in todo], action.max_items_per_call):
                try:
                    self._call(action, action.compensate, chunk)
                except Exception as exc:  # part of the call may have landed: verify decides
                    raised.update({it["saga_id"]: describe(exc) for it in chunk})
            # Verified, not assumed: the target must show the effect gone.
            live = self._verified(action, todo, state)
            failed: dict[str, str] = {}
            for k in todo:
                if live is None:
                    failed[k] = f"compensation could not be verified ({raised.get(k, 'target unreadable')})"
                elif k in live:
                    failed[k] = raised.get(k, "effect still live after compensation")
            ok = [k for k in todo if k not in failed]
            self.log.set_steps(
                name, {**{k: ("compensated", None) for k in ok}, **{k: ("compensating", e) for k, e in failed.items()}}
            )
            for k in ok:
                state[k]["steps"][name] = ("compensated", None)
                if k in was_done or state[k]["status"] == "compensating":
                    undone[k].append(name)
                    out.log.append({"key": k, "step": name, "status": "compensated", "error": None})
            for k, e in failed.items():
                broken[k] = f"rollback failed at {name}: {e}"
                out.log.append({"key": k, "step": name, "status": "compensation_failed", "error": e})
        settled = {}
        for k in keys:
            failed_step, err = why.get(k, ("", ""))
            out.failed[k] = {
                "failed_step": failed_step,
                "error": err,
                "compensated": undone[k],
                "attempts": state[k].get("attempts", 1),
            }
            if k in broken:
                out.failed[k]["compensation_error"] = broken[k]
                settled[k] = ("escalated", failed_step, broken[k])
            elif only is not None and any(state[k]["steps"].get(n, ("",))[0] == "done" for n in self.plan.order):
                settled[k] = ("done", failed_step, err)  # a partial rollback: the rest stays
            else:
                settled[k] = ("compensated", failed_step, err)
        # The person is asked before the saga is marked escalated: a process that dies in
        # between leaves it compensating, and the retry asks again (the item's key is unique).
        if broken and self.review is not None:
            self.review.submit(
                self.workflow,
                [
                    {
                        "key": f"rollback:{k}",
                        "entity_key": k,
                        "reason": r,
                        "proposal": {"kind": "saga_rollback_failed", "saga_id": k, "params": state[k]["params"]},
                    }
                    for k, r in broken.items()
                ],
            )
        self.log.set_status(settled)

    # ---- calls to the target ------------------------------------------------------------
    @staticmethod
    def _item(action: ActionType, saga_id: str, state: dict) -> dict:
        return {**state[saga_id]["params"], "saga_id": saga_id, "key": action.key(saga_id)}

    def _call(self, action: ActionType, fn, chunk: list[dict]):
        limiter = self.limiters.get(action.target) if action.target else None
        for attempt in action.retry.retrying():
            with attempt:
                if limiter is not None:
                    limiter.acquire()
                return call_with_timeout(fn, chunk, action.timeout_s)

    def _verified(self, action: ActionType, saga_ids: list[str], state: dict) -> set[str] | None:
        """Saga ids whose effect of `action` is live at the target; None if the target cannot say."""
        items = [self._item(action, k, state) for k in saga_ids]
        live: set[str] = set()
        try:
            for chunk in _chunks(items, action.max_items_per_call):
                keys = self._call(action, action.verify, chunk)
                live |= {it["saga_id"] for it in chunk if it["key"] in keys}
        except Exception:
            return None
        return live

    def _submit_for_approval(self, items: list[dict], gated: dict[str, str], batch_id: str | None) -> None:
        if gated and self.review is not None:
            self.review.submit(
                self.workflow,
                [
                    {
                        "key": f"approve:{it['key']}",
                        "entity_key": it["key"],
                        "reason": gated[it["key"]],
                        "proposal": {
                            "kind": "saga_approval",
                            "saga_id": it["key"],
                            "plan": self.plan.describe(it),
                            "params": it,
                        },
                    }
                    for it in items
                    if it["key"] in gated
                ],
                batch_id,
            )
