"""The saga log: every saga and every step's state, persisted before and after acting.

A saga is one item's plan (one event's actions). Its row keeps the parameters, so a
later process can resume or compensate it from the log alone. Each write is one
statement for the whole batch (a multi-row INSERT, or an UPDATE over a key list per
distinct value), never one round trip per item (shared/notes/performance.md).
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import SeqType, UtcDateTime, chunks, engine_for, insert_ignoring_duplicates

saga_metadata = sa.MetaData()

# Saga status: planned -> running -> done | compensating -> compensated | escalated;
# awaiting_approval -> planned (once approved); failed = rejected before any step acted;
# refused = a prerequisite refused it for a business reason (failed_step names the rule), nothing acted.
ACTIVE = ("planned", "running", "compensating")
TERMINAL = ("done", "compensated", "escalated", "failed", "refused")
# Step state: planned -> running -> done | failed; done -> compensating -> compensated;
# planned -> skipped: a conditional step whose condition the saga's params do not meet
# (saga_executor.When; `error` holds which condition). A skipped step never acted: a saga
# with skipped steps is `done` when every other step is, and nothing undoes a skipped step.
STEP_STATES = ("planned", "running", "done", "failed", "compensating", "compensated", "skipped")

sagas = sa.Table(
    "bosun_sagas",
    saga_metadata,
    sa.Column("saga_id", sa.String(450), primary_key=True),
    sa.Column("workflow", sa.String(100), nullable=False, index=True),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("failed_step", sa.String(100)),
    sa.Column("reason", sa.Text),
    sa.Column("approved_by", sa.String(200)),
    sa.Column("approved_at", UtcDateTime),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

saga_steps = sa.Table(
    "bosun_saga_steps",
    saga_metadata,
    sa.Column("saga_id", sa.String(450), primary_key=True),
    sa.Column("step", sa.String(100), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Who acts on an entity right now (see leases.py), and each target's token bucket
# (see rate_limit.py): both shared by every run through the database.
leases = sa.Table(
    "bosun_leases",
    saga_metadata,
    sa.Column("entity_key", sa.String(450), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

rate_buckets = sa.Table(
    "bosun_rate_buckets",
    saga_metadata,
    sa.Column("target", sa.String(200), primary_key=True),
    # The time at which the next call may start (a token bucket of depth `burst`
    # kept as its theoretical arrival time, GCRA).
    sa.Column("next_at", sa.Float, nullable=False),
)

# One row per call a target saw, when a test or benchmark measures it.
target_calls = sa.Table(
    "bosun_target_calls",
    saga_metadata,
    sa.Column("id", SeqType, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
)


def _now() -> datetime:
    return clock.now()


def saga_engine(url: str) -> sa.Engine:
    return engine_for(url)


def _grouped(values: dict[str, tuple]) -> dict[tuple, list[str]]:
    by_value: dict[tuple, list[str]] = {}
    for key, value in values.items():
        by_value.setdefault(value, []).append(key)
    return by_value


class SagaLog:
    def __init__(self, url: str):
        self.url, self.engine = url, saga_engine(url)

    def plan(
        self,
        workflow: str,
        batch_id: str | None,
        items: list[dict],
        steps: list[str],
        status_of: dict[str, tuple[str, str]] | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Record new sagas and their steps as planned; sagas already in the log keep their state.
        With `conn`, inside the caller's transaction."""
        if not items:
            return
        now, status_of = _now(), status_of or {}
        rows = [
            {
                "saga_id": it["key"],
                "workflow": workflow,
                "batch_id": batch_id,
                "params": it,
                "status": status_of.get(it["key"], ("planned", None))[0],
                "reason": status_of.get(it["key"], ("planned", None))[1],
                "created_at": now,
                "updated_at": now,
            }
            for it in items
        ]
        step_rows = [
            {"saga_id": it["key"], "step": s, "state": "planned", "updated_at": now} for it in items for s in steps
        ]
        with contextlib.nullcontext(conn) if conn is not None else self.engine.begin() as conn:
            conn.execute(insert_ignoring_duplicates(self.engine, sagas, ["saga_id"]), rows)
            conn.execute(insert_ignoring_duplicates(self.engine, saga_steps, ["saga_id", "step"]), step_rows)

    def load(self, saga_ids: list[str]) -> dict[str, dict]:
        """saga_id -> the saga row with `steps`: {step: (state, error)}."""
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(saga_ids):
                for r in conn.execute(sa.select(sagas).where(sagas.c.saga_id.in_(chunk))).mappings():
                    out[r["saga_id"]] = {**r, "steps": {}}
                q = sa.select(saga_steps).where(saga_steps.c.saga_id.in_(chunk))
                for r in conn.execute(q).mappings():
                    if r["saga_id"] in out:
                        out[r["saga_id"]]["steps"][r["step"]] = (r["state"], r["error"])
        return out

    def set_steps(self, step: str, states: dict[str, tuple[str, str | None]], only_if: tuple[str, ...] = ()) -> None:
        """states: saga_id -> (state, error) for one step, in one statement per distinct value."""
        if not states:
            return
        now = _now()
        with self.engine.begin() as conn:
            for (state, error), keys in _grouped(states).items():
                for chunk in chunks(keys):
                    q = saga_steps.update().where(saga_steps.c.step == step, saga_steps.c.saga_id.in_(chunk))
                    if only_if:
                        q = q.where(saga_steps.c.state.in_(only_if))
                    conn.execute(q.values(state=state, error=error, updated_at=now))

    def set_status(self, statuses: dict[str, tuple[str, str | None, str | None]], only_if: tuple[str, ...] = ()) -> int:
        """statuses: saga_id -> (status, failed_step, reason). Returns rows changed."""
        if not statuses:
            return 0
        now, changed = _now(), 0
        with self.engine.begin() as conn:
            for (status, failed_step, reason), keys in _grouped(statuses).items():
                for chunk in chunks(keys):
                    q = sagas.update().where(sagas.c.saga_id.in_(chunk))
                    if only_if:
                        q = q.where(sagas.c.status.in_(only_if))
                    res = conn.execute(q.values(status=status, failed_step=failed_step, reason=reason, updated_at=now))
                    changed += res.rowcount or 0
        return changed

    def approve(self, saga_id: str, approved_by: str, conn: sa.Connection | None = None) -> bool:
        """awaiting_approval -> planned, once: only the caller that flips the row gets True."""
        with contextlib.nullcontext(conn) if conn is not None else self.engine.begin() as conn:
            res = conn.execute(
                sagas.update()
                .where(sagas.c.saga_id == saga_id, sagas.c.status == "awaiting_approval")
                .values(status="planned", approved_by=approved_by, approved_at=_now(), updated_at=_now())
            )
        return (res.rowcount or 0) == 1

    def reject(self, saga_id: str, rejected_by: str, reason: str, conn: sa.Connection | None = None) -> bool:
        """awaiting_approval -> failed at "approval", once; nothing of it ever acts."""
        with contextlib.nullcontext(conn) if conn is not None else self.engine.begin() as conn:
            res = conn.execute(
                sagas.update()
                .where(sagas.c.saga_id == saga_id, sagas.c.status == "awaiting_approval")
                .values(
                    status="failed",
                    failed_step="approval",
                    reason=f"rejected by {rejected_by}: {reason}",
                    updated_at=_now(),
                )
            )
        return (res.rowcount or 0) == 1

    def unfinished(
        self,
        workflow: str | None = None,
        batch_id: str | None = None,
        updated_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Sagas still planned, running or compensating; `updated_before`: only those no one
        has touched since (a live executor writes a step state at least once per step)."""
        q = sa.select(sagas.c.saga_id, sagas.c.workflow, sagas.c.params, sagas.c.batch_id, sagas.c.updated_at).where(
            sagas.c.status.in_(ACTIVE)
        )
        if workflow:
            q = q.where(sagas.c.workflow == workflow)
        if batch_id:
            q = q.where(sagas.c.batch_id == batch_id)
        if updated_before is not None:
            q = q.where(sagas.c.updated_at < updated_before)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(sagas.c.saga_id)).mappings()]

    def counts(self, workflow: str | None = None) -> dict[str, int]:
        q = sa.select(sagas.c.status, sa.func.count()).group_by(sagas.c.status)
        if workflow:
            q = q.where(sagas.c.workflow == workflow)
        with self.engine.connect() as conn:
            return {s: int(n) for s, n in conn.execute(q)}
