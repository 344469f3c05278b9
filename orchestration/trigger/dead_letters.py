"""Dead letters: events that failed processing after their retry budget, and their re-drive.

The inbox row of a dead-lettered event keeps its terminal state; this table keeps what an
operator needs (error, attempts, first and last failure) and what happened next. A retry
does not rewind the sensor's cursor: it copies the event into a new inbox row keyed
`KEY#retryN` (a new, higher sequence number, so the next batch picks it up) and marks the
old row `retried`. Every row still ends in exactly one terminal state, and the chain is
followed through `current_key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import dead_letters, dialect_insert, engine_for, inbox
from orchestration.trigger.inbox_fence import hold_for_insert

RETRY_MARK = "#retry"


def root_key(key: str) -> str:
    """The original idempotency key of an event, whichever retry row `key` names."""
    return key.split(RETRY_MARK, 1)[0]


def _aware(dt: datetime | None) -> datetime | None:
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class DeadLetterPolicy:
    """Per workflow: the retry budget of an action step, and when open dead letters are a problem."""

    attempts: int = 3
    backoff_s: float = 0.5
    max_open: int = 50
    max_oldest_age_s: float = 24 * 3600

    def breaches(self, stats: "DeadLetterStats") -> list[str]:
        out = []
        if stats.open > self.max_open:
            out.append(f"{stats.open} open dead letters (limit {self.max_open})")
        if stats.oldest_open_age_s is not None and stats.oldest_open_age_s > self.max_oldest_age_s:
            out.append(
                f"oldest open dead letter is {stats.oldest_open_age_s:.0f} s old (limit {self.max_oldest_age_s:.0f} s)"
            )
        return out


@dataclass(frozen=True)
class DeadLetterStats:
    open: int
    oldest_open_age_s: float | None


class DeadLetters:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    # ---- written by Inbox.set_states, in the same transaction as the state change ----
    @staticmethod
    def record(conn: sa.Connection, failures: list[dict], batch_id: str | None, now: datetime) -> None:
        """Upsert one row per failed event: dicts of key, reason, attempts."""
        if not failures:
            return
        keys = [f["key"] for f in failures]
        types = dict(
            conn.execute(
                sa.select(inbox.c.idempotency_key, inbox.c.type).where(inbox.c.idempotency_key.in_(keys))
            ).all()
        )
        rows = [
            {
                "event_key": root_key(f["key"]),
                "current_key": f["key"],
                "type": types.get(f["key"]),
                "batch_id": batch_id,
                "error": f.get("reason") or "unknown error",
                "attempts": int(f.get("attempts") or 1),
                "first_failed_at": now,
                "last_failed_at": now,
                "status": "open",
                "updated_at": now,
            }
            for f in failures
        ]
        stmt = dialect_insert(conn.engine, dead_letters)
        stmt = stmt.on_conflict_do_update(
            index_elements=["event_key"],
            set_={
                "current_key": stmt.excluded.current_key,
                "batch_id": stmt.excluded.batch_id,
                "error": stmt.excluded.error,
                "attempts": dead_letters.c.attempts + stmt.excluded.attempts,
                "last_failed_at": stmt.excluded.last_failed_at,
                "status": "open",
                "note": None,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt, rows)

    # ---- operator side -----------------------------------------------------------------
    def list(self, status: str | None = "open", types: list[str] | None = None, limit: int = 100) -> list[dict]:
        q = sa.select(dead_letters).order_by(dead_letters.c.id).limit(limit)
        if status:
            q = q.where(dead_letters.c.status == status)
        if types:
            q = q.where(dead_letters.c.type.in_(types))
        with self.engine.connect() as conn:
            return [
                {k: _aware(v) if isinstance(v, datetime) else v for k, v in r.items()}
                for r in conn.execute(q).mappings()
            ]

    def retry(self, ids: list[int] | None = None) -> list[dict]:
        """Re-enqueue open dead letters (all when `ids` is None) as new inbox rows."""
        now = clock.now()
        with self.engine.begin() as conn:
            q = sa.select(dead_letters).where(dead_letters.c.status == "open")
            if ids is not None:
                q = q.where(dead_letters.c.id.in_(ids))
            letters = list(conn.execute(q.with_for_update() if conn.dialect.name == "postgresql" else q).mappings())
            if not letters:
                return []
            olds = {
                r["idempotency_key"]: r
                for r in conn.execute(
                    sa.select(inbox).where(inbox.c.idempotency_key.in_([d["current_key"] for d in letters]))
                ).mappings()
            }
            new_rows, moves = [], []
            for d in letters:
                old = olds[d["current_key"]]
                new_key = f"{d['event_key']}{RETRY_MARK}{d['retries'] + 1}"
                new_rows.append(
                    {
                        c: old[c]
                        for c in (
                            "source",
                            "event_id",
                            "type",
                            "schema_version",
                            "occurred_at",
                            "entity_key",
                            "payload",
                        )
                    }
                    | {
                        "idempotency_key": new_key,
                        "received_at": now,
                        "status": "received",
                        "reason": f"retry {d['retries'] + 1} of dead letter {d['id']}",
                    }
                )
                moves.append({"id": d["id"], "old": d["current_key"], "new": new_key})
            hold_for_insert(conn)  # the new rows must not be skipped by a batch cursor (inbox_fence.py)
            conn.execute(inbox.insert(), new_rows)
            conn.execute(
                inbox.update()
                .where(inbox.c.idempotency_key == sa.bindparam("k"))
                .values(status="retried", reason=sa.bindparam("r"), updated_at=now),
                [{"k": m["old"], "r": f"retried as {m['new']}"} for m in moves],
            )
            conn.execute(
                dead_letters.update()
                .where(dead_letters.c.id == sa.bindparam("i"))
                .values(
                    status="retried", current_key=sa.bindparam("n"), retries=dead_letters.c.retries + 1, updated_at=now
                ),
                [{"i": m["id"], "n": m["new"]} for m in moves],
            )
        return [{"id": m["id"], "requeued_as": m["new"]} for m in moves]

    def drop(self, dl_id: int, reason: str) -> bool:
        if not reason.strip():
            raise ValueError("a drop needs a reason")
        with self.engine.begin() as conn:
            n = conn.execute(
                dead_letters.update()
                .where(dead_letters.c.id == dl_id, dead_letters.c.status == "open")
                .values(status="dropped", note=reason, updated_at=clock.now())
            ).rowcount
        return n == 1

    def stats(self, types: list[str] | None = None, now: datetime | None = None) -> DeadLetterStats:
        q = sa.select(sa.func.count(), sa.func.min(dead_letters.c.first_failed_at)).where(
            dead_letters.c.status == "open"
        )
        if types:
            q = q.where(dead_letters.c.type.in_(types))
        with self.engine.connect() as conn:
            n, oldest = conn.execute(q).one()
        now = now or clock.now()
        return DeadLetterStats(int(n), (now - _aware(oldest)).total_seconds() if oldest else None)
