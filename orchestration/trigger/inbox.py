"""The durable inbox: every event stored once, every event ending in one terminal state.

Writes are in bulk (one multi-row statement per call), because per-event round trips
are what make one-run-per-event pipelines slow (see shared/notes/performance.md).
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import engine_for, inbox, insert_ignoring_duplicates
from orchestration.trigger.batching import BatchRange
from orchestration.trigger.dead_letters import DeadLetters
from orchestration.trigger.envelope import (
    EventEnvelope,
    PayloadRegistry,
    RejectedInput,
    parse_envelope,
    raw_fingerprint,
)
from orchestration.trigger.inbox_fence import committed_watermark, hold_for_insert

RECEIVED = "received"
DEAD_LETTERED = "dead_lettered"
# "retried": a dead letter re-enqueued as a new row (see dead_letters.py); the new row carries on.
# "duplicate", "debounced", "stale": dropped by delivery triage (see delivery.py), with the reason.
TERMINAL_STATES = ("done", "escalated", "rejected", "dead_lettered", "retried", "duplicate", "debounced", "stale")


def utcnow() -> datetime:
    return clock.now()


@dataclass
class IngestSummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # valid events' idempotency keys, in input order

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "rejections": self.rejected,
        }


@dataclass(frozen=True)
class InboxEvent:
    seq: int
    key: str
    envelope: EventEnvelope
    status: str
    attempts: int


class Inbox:
    def __init__(self, url: str):
        self.url = url
        self.engine = engine_for(url)

    # ---- write side -------------------------------------------------------------
    def ingest(self, raws: Iterable[Any], registry: PayloadRegistry, all_or_nothing: bool = False) -> IngestSummary:
        """Store each valid event once; keep each invalid one with its reason. With
        `all_or_nothing`, one invalid event means no valid one is stored either (the
        rejections still are), so a client can resend the corrected batch as a whole."""
        summary = IngestSummary()
        now = utcnow()
        rows: dict[str, dict] = {}
        in_call_dupes: Counter[str] = Counter()
        for line_no, raw in enumerate(raws, start=1):
            try:
                env = parse_envelope(raw, registry)
            except RejectedInput as exc:
                key = "rejected:" + raw_fingerprint(raw)
                summary.rejected.append({"line": line_no, "reason": exc.reason})
                rows.setdefault(key, _rejected_row(key, raw, exc.reason, now))
                continue
            key = env.idempotency_key
            if key in rows:
                in_call_dupes[key] += 1
                continue
            rows[key] = _event_row(env, now)
            summary.keys.append(key)
        if all_or_nothing and summary.rejected:
            rows = {k: r for k, r in rows.items() if k.startswith("rejected:")}
            in_call_dupes.clear()
            summary.keys = []
        inserted = self._insert_new(list(rows.values()))
        repeated = Counter({k: 1 for k in rows if k not in inserted}) + in_call_dupes
        if repeated:
            self._count_duplicates(repeated)
        summary.accepted = sum(1 for k in inserted if not k.startswith("rejected:"))
        summary.duplicates = sum(n for k, n in repeated.items() if not k.startswith("rejected:"))
        return summary

    def _insert_new(self, rows: list[dict]) -> set[str]:
        if not rows:
            return set()
        stmt = insert_ignoring_duplicates(self.engine, inbox, ["idempotency_key"]).returning(inbox.c.idempotency_key)
        inserted: set[str] = set()
        with self.writing() as conn:
            for chunk_start in range(0, len(rows), 5000):
                chunk = rows[chunk_start : chunk_start + 5000]
                inserted.update(conn.execute(stmt, chunk).scalars())
        return inserted

    @contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """The transaction every insert into the inbox runs in: it holds the commit fence
        (inbox_fence.py), so no batch cursor moves past an event until it is committed."""
        with self.engine.begin() as conn:
            hold_for_insert(conn)
            yield conn

    def _count_duplicates(self, repeated: Counter) -> None:
        stmt = (
            inbox.update()
            .where(inbox.c.idempotency_key == sa.bindparam("k"))
            .values(duplicate_count=inbox.c.duplicate_count + sa.bindparam("n"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"k": k, "n": n} for k, n in repeated.items()])

    def set_states(
        self, updates: list[dict], batch_id: str | None = None, only_from: tuple[str, ...] | None = None
    ) -> None:
        """Move events to their next state in one statement: dicts of key, status, reason, outcome
        (and attempts, for dead letters, which are also recorded in the dead-letter table).
        `only_from`: move only events still in one of these states (a batch must not undo what
        a reviewer answered while it was writing its outcomes)."""
        if not updates:
            return
        with self.engine.begin() as conn:
            self.set_states_in(conn, updates, batch_id, utcnow(), only_from)

    @staticmethod
    def set_states_in(
        conn: sa.Connection,
        updates: list[dict],
        batch_id: str | None,
        now: datetime,
        only_from: tuple[str, ...] | None = None,
    ) -> None:
        """`set_states` inside the caller's transaction."""
        if not updates:
            return
        stmt = inbox.update().where(inbox.c.idempotency_key == sa.bindparam("k"))
        if only_from:  # equalities, not IN: an expanding IN cannot run as executemany
            stmt = stmt.where(sa.or_(*(inbox.c.status == s for s in only_from)))
        stmt = stmt.values(
            status=sa.bindparam("s"),
            reason=sa.bindparam("r"),
            outcome=sa.bindparam("o"),
            # No batch given (a recovery, an approval): the event keeps its batch.
            batch_id=sa.func.coalesce(sa.bindparam("b", type_=inbox.c.batch_id.type), inbox.c.batch_id),
            attempts=inbox.c.attempts + 1,
            updated_at=now,
        )
        params = [
            {"k": u["key"], "s": u["status"], "r": u.get("reason"), "o": u.get("outcome"), "b": batch_id}
            for u in updates
        ]
        conn.execute(stmt, params)
        DeadLetters.record(conn, [u for u in updates if u["status"] == "dead_lettered"], batch_id, now)

    # ---- read side ----------------------------------------------------------------
    def pending_after(self, cursor: int, types: list[str], limit: int) -> list[tuple[int, datetime]]:
        """(seq, received_at) of events past the cursor, in order, at most `limit`; only up to
        the commit fence's watermark, so a cursor moved to any of them skips no event a writer
        has yet to commit. Raises `WritersInFlight` when the fence cannot be crossed in time."""
        q = (
            sa.select(inbox.c.seq, inbox.c.received_at)
            .where(inbox.c.seq > cursor, inbox.c.type.in_(types), inbox.c.status != "rejected")
            .order_by(inbox.c.seq)
            .limit(limit)
        )
        watermark = committed_watermark(self.engine)
        if watermark is not None:
            q = q.where(inbox.c.seq <= watermark)
        with self.engine.connect() as conn:
            return [(int(s), _aware(r)) for s, r in conn.execute(q)]

    def backlog_after(self, cursor: int, types: list[str], cap: int) -> int:
        """Events waiting past the cursor, counted up to `cap` (the count stays cheap). Behind the
        commit fence like `pending_after`: counted before a bulk insert in flight commits, a
        backlog of thousands read as none, and the batch size was cut for none (Postgres, where
        a tick during a 10,000-event ingest cut two batches of `min_events`)."""
        q = sa.select(inbox.c.seq).where(inbox.c.seq > cursor, inbox.c.type.in_(types), inbox.c.status != "rejected")
        watermark = committed_watermark(self.engine)
        if watermark is not None:
            q = q.where(inbox.c.seq <= watermark)
        inner = q.limit(cap).subquery()
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())

    def unbatched_below(self, cursor: int, types: list[str], received_before: datetime, limit: int) -> list[int]:
        """Stragglers: `received` events at or below the cursor that no batch has claimed,
        received before `received_before`, in seq order, at most `limit` (ix_bosun_inbox_unclaimed
        keeps this cheap)."""
        q = (
            sa.select(inbox.c.seq)
            .where(
                inbox.c.status == RECEIVED,
                inbox.c.batch_id.is_(None),
                inbox.c.seq <= cursor,
                inbox.c.type.in_(types),
                inbox.c.received_at < received_before,
            )
            .order_by(inbox.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [int(s) for s in conn.execute(q).scalars()]

    def claim_batch(self, batch_key: str, types: list[str]) -> list[InboxEvent]:
        """A batch run's events: it first stamps its key on the unclaimed `received` events of
        its range, then reads the `received` events stamped with it (a re-run reads its own
        again). One statement claims, so two batches whose ranges overlap never share an event;
        on Postgres rows another transaction holds are skipped, not waited for (no deadlock
        with a concurrent claim or a duplicate count); one skipped so stays unclaimed and
        the sweeper re-batches it."""
        batch = BatchRange.parse(batch_key)
        in_range = (inbox.c.seq.between(batch.first, batch.last), inbox.c.type.in_(types), inbox.c.status == RECEIVED)
        free = sa.select(inbox.c.seq).where(*in_range, inbox.c.batch_id.is_(None)).with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            conn.execute(inbox.update().where(inbox.c.seq.in_(free)).values(batch_id=batch_key))
            rows = conn.execute(
                sa.select(inbox).where(*in_range, inbox.c.batch_id == batch_key).order_by(inbox.c.seq)
            ).mappings()
            return [_to_event(r) for r in rows]

    def batch_records(self, batch_key: str, types: list[str]) -> list[dict]:
        """Every event the batch claimed, whatever its state now: key, status, reason, outcome, payload."""
        first, last = _range(batch_key)
        q = (
            sa.select(inbox.c.idempotency_key, inbox.c.status, inbox.c.reason, inbox.c.outcome, inbox.c.payload)
            .where(inbox.c.seq.between(first, last), inbox.c.type.in_(types), inbox.c.batch_id == batch_key)
            .order_by(inbox.c.seq)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def batch_statuses(self, batch_key: str, types: list[str]) -> dict[str, str]:
        """Each event the batch claimed: key -> status now (no payloads read or decoded)."""
        first, last = _range(batch_key)
        q = sa.select(inbox.c.idempotency_key, inbox.c.status).where(
            inbox.c.seq.between(first, last), inbox.c.type.in_(types), inbox.c.batch_id == batch_key
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(q).all())

    def batch_states(self, batch_key: str, types: list[str]) -> Counter:
        """Events per state among those the batch claimed."""
        first, last = _range(batch_key)
        q = (
            sa.select(inbox.c.status, sa.func.count())
            .where(inbox.c.seq.between(first, last), inbox.c.type.in_(types), inbox.c.batch_id == batch_key)
            .group_by(inbox.c.status)
        )
        with self.engine.connect() as conn:
            return Counter({s: int(n) for s, n in conn.execute(q)})

    def events_between(self, first: int, last: int, types: list[str], statuses=(RECEIVED,)) -> list[InboxEvent]:
        q = (
            sa.select(inbox)
            .where(inbox.c.seq.between(first, last), inbox.c.type.in_(types), inbox.c.status.in_(statuses))
            .order_by(inbox.c.seq)
        )
        with self.engine.connect() as conn:
            return [_to_event(r) for r in conn.execute(q).mappings()]

    def records_between(self, first: int, last: int, types: list[str]) -> list[dict]:
        """Every event of a batch whatever its state: key, status, reason, outcome, payload."""
        q = (
            sa.select(inbox.c.idempotency_key, inbox.c.status, inbox.c.reason, inbox.c.outcome, inbox.c.payload)
            .where(inbox.c.seq.between(first, last), inbox.c.type.in_(types))
            .order_by(inbox.c.seq)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def states_between(self, first: int, last: int, types: list[str]) -> Counter:
        q = (
            sa.select(inbox.c.status, sa.func.count())
            .where(inbox.c.seq.between(first, last), inbox.c.type.in_(types))
            .group_by(inbox.c.status)
        )
        with self.engine.connect() as conn:
            return Counter({s: int(n) for s, n in conn.execute(q)})

    def counts(self) -> dict:
        with self.engine.connect() as conn:
            by_status = {
                s: int(n) for s, n in conn.execute(sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status))
            }
            dupes = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(inbox.c.duplicate_count), 0))).scalar_one()
        return {"received": sum(by_status.values()), "by_status": by_status, "duplicates": int(dupes)}

    def lookup(self, keys: list[str]) -> dict[str, dict]:
        """Status rows by idempotency key; a key whose row was retried resolves to its latest retry."""
        from orchestration.core.db import dead_letters
        from orchestration.trigger.dead_letters import root_key

        cols = (
            inbox.c.idempotency_key,
            inbox.c.source,
            inbox.c.event_id,
            inbox.c.type,
            inbox.c.entity_key,
            inbox.c.status,
            inbox.c.reason,
            inbox.c.outcome,
            inbox.c.batch_id,
            inbox.c.received_at,
            inbox.c.updated_at,
            inbox.c.duplicate_count,
        )
        with self.engine.connect() as conn:
            rows = {
                r["idempotency_key"]: dict(r)
                for r in conn.execute(sa.select(*cols).where(inbox.c.idempotency_key.in_(keys))).mappings()
            }
            retried = [k for k, r in rows.items() if r["status"] == "retried"]
            if retried:
                latest = dict(
                    conn.execute(
                        sa.select(dead_letters.c.event_key, dead_letters.c.current_key).where(
                            dead_letters.c.event_key.in_([root_key(k) for k in retried])
                        )
                    ).all()
                )
                current = {
                    r["idempotency_key"]: dict(r)
                    for r in conn.execute(
                        sa.select(*cols).where(inbox.c.idempotency_key.in_(list(latest.values())))
                    ).mappings()
                }
                for k in retried:
                    now_row = current.get(latest.get(root_key(k)))
                    if now_row:
                        rows[k] = {**now_row, "retry_of": k}
        return rows

    def rejected(self, limit: int = 100) -> list[dict]:
        q = (
            sa.select(inbox.c.seq, inbox.c.idempotency_key, inbox.c.status, inbox.c.reason)
            .where(inbox.c.status.in_(("rejected", "dead_lettered")))
            .order_by(inbox.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


def _range(batch_key: str) -> tuple[int, int]:
    batch = BatchRange.parse(batch_key)
    return batch.first, batch.last


def _aware(dt: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written in UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _event_row(env: EventEnvelope, now: datetime) -> dict:
    return {
        "idempotency_key": env.idempotency_key,
        "source": env.source,
        "event_id": env.id,
        "type": env.type,
        "schema_version": env.schema_version,
        "occurred_at": env.occurred_at.astimezone(timezone.utc),
        "entity_key": env.entity_key,
        "payload": env.payload,
        "received_at": now,
        "status": RECEIVED,
        "reason": None,
    }


def _rejected_row(key: str, raw: Any, reason: str, now: datetime) -> dict:
    # The raw input is kept verbatim so a corrected resend can be compared and retried.
    raw_text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return {
        "idempotency_key": key,
        "source": None,
        "event_id": None,
        "type": None,
        "schema_version": None,
        "occurred_at": None,
        "entity_key": None,
        "payload": {"raw": raw_text[:20000]},
        "received_at": now,
        "status": "rejected",
        "reason": reason,
    }


def _to_event(row) -> InboxEvent:
    env = EventEnvelope.model_construct(
        source=row["source"],
        id=row["event_id"],
        type=row["type"],
        schema_version=row["schema_version"],
        occurred_at=_aware(row["occurred_at"]),
        entity_key=row["entity_key"],
        payload=row["payload"],
    )
    return InboxEvent(
        seq=int(row["seq"]),
        key=row["idempotency_key"],
        envelope=env,
        status=row["status"],
        attempts=int(row["attempts"]),
    )
