"""A target system that records one row per action (its idempotency key, the entity acted
on, whether it is in effect), in a database of the workflow's choosing: what a workflow whose
real target is not reachable yet (a sample, a test, a first version) acts on, with the same
guarantees as a real one: idempotent by key, compensated by switching the row off, verified
by reading it, reconciled and checked for an entity acted on twice."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import sqlalchemy as sa

from orchestration.action.actions import ActionType
from orchestration.action.batch import action_key
from orchestration.action.saga_executor import Refusal
from orchestration.core.db import engine_for
from orchestration.verification.outcome_reconciliation import Effect


class RowTarget:
    def __init__(self, table: str):
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("key", sa.String(200), primary_key=True),
            sa.Column("step", sa.String(100), nullable=False),
            sa.Column("entity", sa.String(200), nullable=False, index=True),
            sa.Column("live", sa.Boolean, nullable=False),
        )

    def engine(self, url: str) -> sa.Engine:
        engine = engine_for(url)
        self.table.create(engine, checkfirst=True)
        return engine

    def action(
        self,
        step: str,
        url: str,
        entity: Callable[[dict], str],
        write: Optional[Callable[[list[dict]], None]] = None,
        unwrite: Optional[Callable[[list[dict]], None]] = None,
        **kwargs,
    ) -> ActionType:
        """`step` as an action: do inserts its row once, compensate switches it off, verify reads
        it. `write`/`unwrite`, when given, also change the target's own records (after the row
        is in, before it is switched off), e.g. a field of the record the step sets."""
        t = self.table

        def do(items: list[dict]) -> dict[str, str]:
            refused = insert(items)
            if write is not None:
                write(items)
            return refused

        def undo(items: list[dict]) -> None:
            if unwrite is not None:
                unwrite(items)
            switch_off(items)

        def insert(items: list[dict]) -> dict[str, str]:
            rows = {it["key"]: entity(it) for it in items}  # an item's key is its action's idempotency key
            with self.engine(url).begin() as c:
                there = set(c.execute(sa.select(t.c.key).where(t.c.key.in_(rows))).scalars())
                new = [{"key": k, "step": step, "entity": e, "live": True} for k, e in rows.items() if k not in there]
                if new:
                    c.execute(t.insert(), new)
            return {}

        def switch_off(items: list[dict]) -> None:
            # The executor hands a compensation the same items as `do`: the key is the action's already.
            with self.engine(url).begin() as c:
                c.execute(t.update().where(t.c.key.in_([it["key"] for it in items])).values(live=False))

        def live(items: list[dict]) -> set[str]:
            keys = [it["key"] for it in items]
            with self.engine(url).connect() as c:
                return set(c.execute(sa.select(t.c.key).where(t.c.key.in_(keys), t.c.live)).scalars())

        return ActionType(
            step, do=do, compensate=undo, verify=live, key=lambda saga_id: action_key(saga_id, step), **kwargs
        )

    def effects(self, url: str, keys: Sequence[str], entities: Sequence[str]) -> list[Effect]:
        """The rows under the batch's keys or about its entities (for the reconciliation)."""
        t = self.table
        with self.engine(url).connect() as c:
            rows = c.execute(sa.select(t).where(sa.or_(t.c.key.in_(list(keys)), t.c.entity.in_(list(entities)))))
            return [Effect(r.key, r.live, r.entity) for r in rows]

    def held_elsewhere(
        self, url: str, step: str, entity: Callable[[dict], str], code: str
    ) -> Callable[[list[dict]], dict[str, Refusal]]:
        """A saga's `prerequisites`: an entity with a live `step` row under another saga's key
        (acted on by an earlier event) is refused with `code`, so it is not acted on twice."""

        def refusals(items: list[dict]) -> dict[str, Refusal]:
            t = self.table
            with self.engine(url).connect() as c:
                q = sa.select(t.c.entity, t.c.key).where(
                    t.c.live, t.c.step == step, t.c.entity.in_([entity(it) for it in items])
                )
                held = dict(c.execute(q).all())
            return {
                it["key"]: Refusal(code, f"{step} already done by {held[entity(it)]}")
                for it in items
                if entity(it) in held and held[entity(it)] != action_key(it["key"], step)
            }

        return refusals

    def acted_twice(self, url: str, step: str) -> list[str]:
        """Entities with more than one live row of `step`, across all batches."""
        t = self.table
        q = sa.select(t.c.entity).where(t.c.live, t.c.step == step).group_by(t.c.entity).having(sa.func.count() > 1)
        with self.engine(url).connect() as c:
            return list(c.execute(q).scalars())
