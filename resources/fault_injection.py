"""Fault injection around a target system, for tests and benchmarks of the action layer.

`FaultyTarget(target, plan)` exposes the target's write and read methods unchanged
except for what the plan injects, per item key and method: transient errors (before
any effect), timeouts (the effect lands, the answer never comes), permanent refusals
of one item, and a hard-kill point: before a numbered call, or after its effect and
before the caller can record it, the process announces KILLPOINT on stdout and waits
for the parent to SIGKILL it by its pid. Every call is recorded (method, time, keys),
and, given a `journal` database, every item that reached the target is written there
with who sent it, so a test can tell from the database which process acted on what.

`FaultySagaLog(log, plan)` adds the kill points between two writes of the saga log:
after a chosen write has committed and before the next one starts (after step N is
logged done and before step N+1 is logged running, say).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from orchestration.action.actions import PermanentError, RetryableError
from orchestration.core.db import SeqType, engine_for
from orchestration.core.schema_migrations import SchemaOwner

journal_metadata = sa.MetaData()

# One row per item a wrapped target applied: which process (holder) sent it, when.
target_journal = sa.Table(
    "fault_target_journal",
    journal_metadata,
    sa.Column("id", SeqType, primary_key=True, autoincrement=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("method", sa.String(100), nullable=False),
    sa.Column("item_key", sa.String(450), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
)

# Migrated like any owner's tables (version table fault_journal_alembic_version).
journal_schema = SchemaOwner(
    "fault_journal",
    str(Path(__file__).parent / "migrations" / "fault_journal"),
    lambda: (journal_metadata,),
    table_prefixes=("fault_",),
)


@dataclass
class FaultPlan:
    # (method, item key) -> number of calls containing it that fail transiently
    transient: dict[tuple[str, str], int] = field(default_factory=dict)
    # (method, item key) -> number of calls containing it whose answer is lost (effect applied)
    timeouts: dict[tuple[str, str], int] = field(default_factory=dict)
    # (method, item key): the target refuses this item for good (do: per-item error; compensate: stays live)
    permanent: set[tuple[str, str]] = field(default_factory=set)
    # (method, item key) -> number of calls containing it that land only after hang_s (a slow request)
    late: dict[tuple[str, str], int] = field(default_factory=dict)
    # ("before", method, n): before its n-th call; ("after", method, n): after its n-th effect;
    # ("logged", what, n): after the n-th saga-log write of `what` committed (FaultySagaLog):
    # "plan", "status:<status>", "step:<step>:<state>"
    kill: tuple[str, str, int] | None = None
    hang_s: float = 1.0  # how long a lost answer keeps the caller waiting (beyond its timeout)


def seeded_plan(
    saga_ids: list[str],
    methods: dict[str, str],
    seed: int,
    *,
    p_transient=0.03,
    p_timeout=0.02,
    p_refuse=0.08,
    p_undo_fails=0.2,
    key=lambda method, saga: f"{method}:{saga}",
) -> FaultPlan:
    """methods: do method -> its compensation method. Faults drawn per saga and step."""
    rng, plan = random.Random(seed), FaultPlan()
    for s in saga_ids:
        for do, undo in methods.items():
            k = key(do, s)
            r = rng.random()
            if r < p_transient:
                plan.transient[(do, k)] = rng.randint(1, 2)
            elif r < p_transient + p_timeout:
                plan.timeouts[(do, k)] = 1
            elif r < p_transient + p_timeout + p_refuse:
                plan.permanent.add((do, k))
        for do, undo in methods.items():
            if rng.random() < p_undo_fails * p_refuse:
                plan.permanent.add((undo, key(do, s)))
    return plan


def _stop_for_the_kill(point: str) -> None:
    sys.stdout.write(f"KILLPOINT {point} pid={os.getpid()}\n")
    sys.stdout.flush()
    # Freeze every thread at this point (a call may run in a worker thread, the caller
    # would carry on); the parent then SIGKILLs this process by its pid.
    os.kill(os.getpid(), signal.SIGSTOP)


class FaultyTarget:
    def __init__(
        self, target, plan: FaultPlan, methods: list[str], journal: str | None = None, holder: str | None = None
    ):
        self._target, self._plan, self._methods = target, plan, set(methods)
        self._journal = engine_for(journal, (journal_schema,)) if journal else None
        self._holder = holder or f"pid-{os.getpid()}"
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._calls: dict[str, int] = {}
        self._effects: dict[str, int] = {}  # calls that reached the target's effect
        self.calls: list[tuple[str, float, list[str]]] = []
        self.finished = 0  # calls that reached their effect, late ones included

    def __getattr__(self, name):
        real = getattr(self._target, name)
        if name not in self._methods:
            return real

        def call(items):
            keys = [it["key"] if isinstance(it, dict) else it for it in items]
            with self._lock:
                n = self._calls[name] = self._calls.get(name, 0) + 1
                self.calls.append((name, time.time(), keys))
                counts = {k: self._seen.get((name, k), 0) for k in keys}
                for k in keys:
                    self._seen[(name, k)] = counts[k] + 1
            self._maybe_kill("before", name, n)
            if any(counts[k] < self._plan.transient.get((name, k), 0) for k in keys):
                raise RetryableError(f"{name}: HTTP 503, try again")
            if any(counts[k] < self._plan.late.get((name, k), 0) for k in keys):
                time.sleep(self._plan.hang_s)  # the caller has given up by now; the write still lands
            refused = [it for it, k in zip(items, keys) if (name, k) in self._plan.permanent]
            sent = [it for it, k in zip(items, keys) if (name, k) not in self._plan.permanent]
            result = real(sent)
            self._record(name, sent)
            with self._lock:
                landed = self._effects[name] = self._effects.get(name, 0) + 1
            self._maybe_kill("after", name, landed)
            if any(counts[k] < self._plan.timeouts.get((name, k), 0) for k in keys):
                time.sleep(self._plan.hang_s)  # applied, but the answer is lost
            with self._lock:
                self.finished += 1
            if refused:
                if isinstance(result, dict):
                    return {**result, **{it["key"]: f"{name}: refused by the target" for it in refused}}
                raise PermanentError(f"{name}: refused {len(refused)} item(s)")
            return result

        return call

    def _maybe_kill(self, when: str, name: str, n: int) -> None:
        if self._plan.kill == (when, name, n):
            _stop_for_the_kill(f"{when} {name} {n}")

    def _record(self, name: str, items: list) -> None:
        if self._journal is None or not items:
            return
        now = time.time()
        with self._journal.begin() as conn:
            conn.execute(
                target_journal.insert(),
                [
                    {
                        "holder": self._holder,
                        "method": name,
                        "item_key": it["key"] if isinstance(it, dict) else it,
                        "at": now,
                    }
                    for it in items
                ],
            )


class FaultySagaLog:
    """A saga log whose process stops after a chosen write: plan.kill = ("logged", what, n)
    with what = "plan", "status:<status>" or "step:<step>:<state>" stops after the n-th
    committed write that records it, before the executor's next write."""

    _WRITES = ("plan", "set_steps", "set_status")

    def __init__(self, log, plan: FaultPlan):
        self._log, self._plan = log, plan
        self._counts: dict[str, int] = {}
        self.writes: list[set[str]] = []  # what each write recorded, in order

    def __getattr__(self, name):
        real = getattr(self._log, name)
        if name not in self._WRITES:
            return real

        def write(*args, **kwargs):
            result = real(*args, **kwargs)
            recorded = self._recorded(name, *args, **kwargs)
            if recorded:
                self.writes.append(recorded)
                for what in sorted(recorded):
                    n = self._counts[what] = self._counts.get(what, 0) + 1
                    if self._plan.kill == ("logged", what, n):
                        _stop_for_the_kill(f"logged {what} {n}")
            return result

        return write

    @staticmethod
    def _recorded(name: str, *args, **kwargs) -> set[str]:
        if name == "plan":
            items = args[2] if len(args) > 2 else kwargs.get("items")
            return {"plan"} if items else set()
        if name == "set_steps":
            step, states = args[0], (args[1] if len(args) > 1 else kwargs["states"])
            return {f"step:{step}:{state}" for state, _ in states.values()}
        statuses = args[0] if args else kwargs["statuses"]
        return {f"status:{status}" for status, _, _ in statuses.values()}
