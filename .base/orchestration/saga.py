"""A batch saga executor: steps applied to many items at once, compensation in reverse.

Each step acts on every item still in flight with one call (one multi-row write to the
target system, not one round trip per item). An item whose step fails has every step it
already completed compensated, in reverse order; the others carry on. Steps must be
idempotent by the item's key, so a replay after a crash never acts twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

# do(items) -> {key: error message} for the items that failed; raising fails them all.
StepFn = Callable[[list[dict]], dict[str, str]]
CompensateFn = Callable[[list[dict]], None]


@dataclass(frozen=True)
class SagaStep:
    name: str
    do: StepFn
    compensate: CompensateFn


@dataclass
class SagaOutcome:
    done: list[str] = field(default_factory=list)
    # key -> {"failed_step", "error", "compensated": [steps], "compensation_error"}
    failed: dict[str, dict] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)  # per item and step, for the audit log


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def run_sagas(items: Sequence[dict], steps: Sequence[SagaStep], key: str = "key") -> SagaOutcome:
    out = SagaOutcome()
    in_flight = list(items)
    completed: dict[str, list[SagaStep]] = {it[key]: [] for it in items}
    failed_items: list[dict] = []
    for step in steps:
        if not in_flight:
            break
        try:
            errors = step.do(in_flight)
        except Exception as exc:  # the whole call failed: every item in it failed at this step
            errors = {it[key]: _describe(exc) for it in in_flight}
        still: list[dict] = []
        for it in in_flight:
            k = it[key]
            err = errors.get(k)
            out.log.append({"key": k, "step": step.name, "status": "failed" if err else "done", "error": err})
            if err:
                out.failed[k] = {"failed_step": step.name, "error": err, "compensated": []}
                failed_items.append(it)
            else:
                completed[k].append(step)
                still.append(it)
        in_flight = still
    _compensate(failed_items, completed, steps, out, key)
    out.done = [it[key] for it in in_flight]
    return out


def _compensate(failed_items, completed, steps, out: SagaOutcome, key: str) -> None:
    for step in reversed(steps):
        todo = [it for it in failed_items if step in completed[it[key]]]
        if not todo:
            continue
        try:
            step.compensate(todo)
            status, err = "compensated", None
        except Exception as exc:
            status, err = "compensation_failed", _describe(exc)
        for it in todo:
            k = it[key]
            out.log.append({"key": k, "step": step.name, "status": status, "error": err})
            if err:
                out.failed[k]["compensation_error"] = err
            else:
                out.failed[k]["compensated"].append(step.name)
