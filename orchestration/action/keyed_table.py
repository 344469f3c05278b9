"""A target system's own table written by idempotency key, as payment and ledger APIs are:
what any workflow acting on a SQL target needs of such a table, whatever its other columns.

Compare row_target.py, a table Bosun owns with one row per action. Here the table is the
target's, with the target's columns; Bosun relies on three of them: a unique idempotency key
(a replayed write is a no-op), a status (live, or voided by the compensation: kept, never
deleted, as an accountant expects a reversal on record) and the column stamped when voided.
Every read of many keys is chunked (orchestration/core/db.py `rows_in`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Sequence

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import chunks, insert_ignoring_duplicates, rows_in


@dataclass(frozen=True)
class KeyedTable:
    table: sa.Table
    live: str  # the status of a row in effect ("posted")
    voided: str  # its status once compensated ("reversed")
    voided_at: str  # the column stamped when it is voided
    # What a compensation's item must carry to write a tombstone row (see `void`).
    tombstone_needs: tuple[str, ...] = ()
    key: str = "idempotency_key"
    status: str = "status"

    def insert_once(self, engine: sa.Engine, rows: list[dict]) -> None:
        """Each row once: the idempotency key is unique, so a replayed write is a no-op."""
        with engine.begin() as conn:
            conn.execute(insert_ignoring_duplicates(engine, self.table, [self.key]), rows)

    def void(self, engine: sa.Engine, items: list[dict], tombstone: Callable[[dict, datetime], dict]) -> None:
        """The compensation: the live rows under the items' keys are voided and stamped.
        `tombstone(item, now)` is the voided row written for a key with no row yet."""
        t, now = self.table, clock.now()
        with engine.begin() as conn:
            for part in chunks([it["key"] for it in items]):
                conn.execute(
                    t.update()
                    .where(t.c[self.key].in_(part), t.c[self.status] == self.live)
                    .values({self.status: self.voided, self.voided_at: now})
                )
            # Voiding a key whose write has not arrived consumes the key, as a payment API
            # does: a write that timed out and lands later is then a no-op.
            if all(f in it for it in items for f in self.tombstone_needs):
                conn.execute(insert_ignoring_duplicates(engine, t, [self.key]), [tombstone(it, now) for it in items])

    def live_keys(self, engine: sa.Engine, keys: Sequence[str]) -> set[str]:
        """Which of these keys are in effect now (a saga step's `verify`)."""
        t = self.table
        q = sa.select(t.c[self.key]).where(t.c[self.status] == self.live)
        with engine.connect() as conn:
            return {r[self.key] for r in rows_in(conn, q, t.c[self.key], keys)}

    def live_rows(self, engine: sa.Engine, **equal: object) -> list[dict]:
        """Every row in effect now, those whose columns equal `equal` if given."""
        t = self.table
        q = sa.select(t).where(t.c[self.status] == self.live, *(t.c[c] == v for c, v in equal.items()))
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def rows_for(
        self, engine: sa.Engine, keys: Sequence[str], column: str, values: Sequence, columns: Sequence[str]
    ) -> list[dict]:
        """`columns` (with the key and status) of the rows, in effect or voided, under one of
        `keys` or whose `column` is one of `values`, each once and with `live`: every row a
        batch's reconciliation must account for."""
        t = self.table
        q = sa.select(*(t.c[c] for c in dict.fromkeys((self.key, *columns, self.status))))
        seen: set[str] = set()
        out: list[dict] = []
        with engine.connect() as conn:
            for by, wanted in ((t.c[self.key], keys), (t.c[column], values)):
                for r in rows_in(conn, q, by, wanted):
                    if r[self.key] not in seen:
                        seen.add(r[self.key])
                        out.append({**r, "live": r[self.status] == self.live})
        return out
