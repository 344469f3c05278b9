"""A batch saga executor: steps applied to many items at once, compensation in reverse.

Each step acts on every item still in flight with one call (one multi-row write to the
target system, not one round trip per item). An item whose step fails has every step it
already completed compensated, in reverse order; the others carry on. Steps must be
idempotent by the item's key, so a replay after a crash never acts twice.

A step has a retry budget (`attempts`, exponential `backoff_s`): the items it failed are
retried, in one call each round, before they count as failed; each failed item records
how many attempts it had, which the dead-letter table keeps.
"""

from __future__ import annotations

import time
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
    attempts: int = 1        # the retry budget: calls per item before it counts as failed
    backoff_s: float = 0.0   # wait before retry n is backoff_s * 2 ** (n - 1)


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
        errors, tries = _call_with_retries(step, in_flight, key)
        still: list[dict] = []
        for it in in_flight:
            k = it[key]
            err = errors.get(k)
            out.log.append({"key": k, "step": step.name, "status": "failed" if err else "done", "error": err,
                            "attempts": tries[k]})
            if err:
                out.failed[k] = {"failed_step": step.name, "error": err, "compensated": [], "attempts": tries[k]}
                failed_items.append(it)
            else:
                completed[k].append(step)
                still.append(it)
        in_flight = still
    _compensate(failed_items, completed, steps, out, key)
    out.done = [it[key] for it in in_flight]
    return out


def _call(step: SagaStep, items: list[dict], key: str) -> dict[str, str]:
    try:
        return step.do(items)
    except Exception as exc:  # the whole call failed: every item in it failed at this step
        return {it[key]: _describe(exc) for it in items}


def _call_with_retries(step: SagaStep, items: list[dict], key: str) -> tuple[dict[str, str], dict[str, int]]:
    """Errors of the items still failing after the step's budget, and attempts per item."""
    tries = {it[key]: 1 for it in items}
    errors = _call(step, items, key)
    for n in range(1, max(step.attempts, 1)):
        retry = [it for it in items if it[key] in errors]
        if not retry:
            break
        if step.backoff_s:
            time.sleep(step.backoff_s * 2 ** (n - 1))
        for it in retry:
            tries[it[key]] += 1
        again = _call(step, retry, key)
        errors = {k: again[k] for k in (it[key] for it in retry) if k in again}
    return errors, tries


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
