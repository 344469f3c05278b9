"""Hostile delivery: content duplicates, bursts per entity, and events out of order.

The inbox already drops re-deliveries of one id. This is the next line, applied to a
batch's events before anything acts on them (`triage`), configured per event type:

- content de-duplication: an event whose payload equals one seen under another id, with
  occurred_at within `content_window_s`, ends `duplicate`;
- debounce: of an entity's events in the batch within `debounce_s` of the next one, only
  the latest is processed, the earlier end `debounced` (the burst is processed once, with
  the latest state). Bursts split across two batches are not merged: the batch cut
  (`max_wait_seconds`) bounds what one batch can see;
- ordering: an event older (occurred_at) than the newest already triaged for its entity is
  stale; `stale="ignore"` ends it `stale`, `"process"` processes it; either way it is
  recorded in `bosun_stale_events`.

A dead letter's retry (`KEY#retryN`) passed triage when it first arrived; an operator's
re-drive is processed as asked, so it bypasses triage.
Each verdict is a terminal state with a reason, written in bulk; triage of concurrent
batches is serialised by a lock row, so two batches never both keep the same content.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, Mapping

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import content_seen, dialect_insert, entity_clock, stale_events, triage_lock, triage_passed
from orchestration.trigger.dead_letters import root_key
from orchestration.trigger.inbox import Inbox, InboxEvent

DROPPED_STATES = ("duplicate", "debounced", "stale")


@dataclass(frozen=True)
class DeliveryPolicy:
    content_window_s: float = 0.0  # 0: no content de-duplication
    debounce_s: float = 0.0  # 0: no debounce
    stale: Literal["ignore", "process"] = "process"


@dataclass
class TriageResult:
    kept: list[InboxEvent]
    states: list[dict] = field(default_factory=list)  # the dropped events' terminal states
    stale_processed: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def content_hash(ev: InboxEvent) -> str:
    body = json.dumps(ev.envelope.payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{ev.envelope.type}\n{body}".encode()).hexdigest()


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _when(ev: InboxEvent) -> datetime:
    return ev.envelope.occurred_at.astimezone(timezone.utc)


def triage(
    inbox: Inbox,
    events: list[InboxEvent],
    policies: Mapping[str, DeliveryPolicy],
    lock_name: str,
    batch_id: str | None = None,
) -> TriageResult:
    redriven = [e for e in events if e.key != root_key(e.key)]
    events = sorted((e for e in events if e.key == root_key(e.key)), key=lambda e: (_when(e), e.seq))
    now = clock.now()
    out = TriageResult(kept=[])
    with inbox.engine.begin() as conn:
        _lock(conn, lock_name)
        passed = (
            set(
                conn.execute(
                    sa.select(triage_passed.c.idempotency_key).where(
                        triage_passed.c.idempotency_key.in_([e.key for e in events])
                    )
                ).scalars()
            )
            if events
            else set()
        )
        replayed = [e for e in events if e.key in passed]
        fresh = [e for e in events if e.key not in passed]
        survivors = _dedupe_content(conn, fresh, policies, out)
        survivors = _debounce(survivors, policies, out)
        kept = _order(conn, survivors, policies, out, batch_id, now)
        if kept:
            conn.execute(
                dialect_insert(conn.engine, triage_passed).on_conflict_do_nothing(),
                [{"idempotency_key": e.key, "batch_id": batch_id} for e in kept],
            )
        out.kept = kept + replayed + redriven
        inbox.set_states_in(conn, out.states, batch_id, now)
    out.counts.update({"kept": len(out.kept), "stale_processed": len(out.stale_processed)})
    return out


def _lock(conn: sa.Connection, name: str) -> None:
    # A write first: SQLite takes its write lock now (no read-then-upgrade deadlock),
    # Postgres locks the row until commit.
    if conn.execute(triage_lock.update().where(triage_lock.c.name == name).values(n=triage_lock.c.n + 1)).rowcount:
        return
    conn.execute(dialect_insert(conn.engine, triage_lock).on_conflict_do_nothing(), {"name": name, "n": 1})
    conn.execute(triage_lock.update().where(triage_lock.c.name == name).values(n=triage_lock.c.n + 1))


def _dedupe_content(conn, events, policies, out: TriageResult) -> list[InboxEvent]:
    checked = [e for e in events if policies.get(e.envelope.type, DeliveryPolicy()).content_window_s > 0]
    if not checked:
        return events
    hashes = {e.key: content_hash(e) for e in checked}
    seen: dict[tuple[str, str], list[tuple[str, datetime]]] = defaultdict(list)
    for t, h, k, at in conn.execute(
        sa.select(
            content_seen.c.type, content_seen.c.content_hash, content_seen.c.first_key, content_seen.c.first_occurred_at
        ).where(content_seen.c.content_hash.in_(set(hashes.values())))
    ):
        seen[(t, h)].append((k, _aware(at)))
    survivors, inserts = [], []
    for e in events:
        if e.key not in hashes:
            survivors.append(e)
            continue
        window = policies[e.envelope.type].content_window_s
        slot = (e.envelope.type, hashes[e.key])
        first = next(
            (
                k
                for k, at in seen[slot]
                if root_key(k) != root_key(e.key) and abs((_when(e) - at).total_seconds()) <= window
            ),
            None,
        )
        if first:
            out.states.append(
                {"key": e.key, "status": "duplicate", "reason": f"same content as {first} within {window:g} s"}
            )
            out.counts["duplicate"] += 1
            continue
        seen[slot].append((e.key, _when(e)))
        inserts.append({"type": slot[0], "content_hash": slot[1], "first_key": e.key, "first_occurred_at": _when(e)})
        survivors.append(e)
    if inserts:
        conn.execute(dialect_insert(conn.engine, content_seen).on_conflict_do_nothing(), inserts)
    return survivors


def _debounce(events, policies, out: TriageResult) -> list[InboxEvent]:
    by_entity: dict[tuple[str, str], list[InboxEvent]] = defaultdict(list)
    for e in events:
        by_entity[(e.envelope.type, e.envelope.entity_key)].append(e)
    dropped: set[str] = set()
    for (etype, _), evs in by_entity.items():
        t = policies.get(etype, DeliveryPolicy()).debounce_s
        if t <= 0 or len(evs) < 2:
            continue
        for cur, nxt in zip(evs, evs[1:]):
            if (_when(nxt) - _when(cur)).total_seconds() <= t:
                dropped.add(cur.key)
                out.states.append(
                    {"key": cur.key, "status": "debounced", "reason": f"superseded by {nxt.key} within {t:g} s"}
                )
    out.counts["debounced"] += len(dropped)
    return [e for e in events if e.key not in dropped]


def _order(conn, events, policies, out: TriageResult, batch_id, now) -> list[InboxEvent]:
    if not events:
        return []
    entities = {(e.envelope.type, e.envelope.entity_key) for e in events}
    clock = {
        (t, k): (_aware(at), last)
        for t, k, at, last in conn.execute(
            sa.select(
                entity_clock.c.type, entity_clock.c.entity_key, entity_clock.c.last_occurred_at, entity_clock.c.last_key
            ).where(entity_clock.c.entity_key.in_({k for _, k in entities}))
        )
        if (t, k) in entities
    }
    kept, stale_rows, moved = [], [], {}
    for e in events:
        slot = (e.envelope.type, e.envelope.entity_key)
        newest = clock.get(slot)
        if newest and _when(e) < newest[0] and root_key(newest[1]) != root_key(e.key):
            policy = policies.get(slot[0], DeliveryPolicy()).stale
            stale_rows.append(
                {
                    "idempotency_key": e.key,
                    "type": slot[0],
                    "entity_key": slot[1],
                    "occurred_at": _when(e),
                    "newer_key": newest[1],
                    "newer_occurred_at": newest[0],
                    "policy": policy,
                    "batch_id": batch_id,
                    "recorded_at": now,
                }
            )
            if policy == "ignore":
                out.states.append(
                    {
                        "key": e.key,
                        "status": "stale",
                        "reason": f"older than {newest[1]} ({newest[0].isoformat()}) for {slot[1]}; policy: ignore",
                    }
                )
                out.counts["stale"] += 1
                continue
            out.stale_processed.append(e.key)
        else:
            clock[slot] = (_when(e), e.key)
            moved[slot] = {"type": slot[0], "entity_key": slot[1], "last_occurred_at": _when(e), "last_key": e.key}
        kept.append(e)
    if moved:
        stmt = dialect_insert(conn.engine, entity_clock)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["type", "entity_key"],
                set_={"last_occurred_at": stmt.excluded.last_occurred_at, "last_key": stmt.excluded.last_key},
            ),
            list(moved.values()),
        )
    if stale_rows:
        conn.execute(dialect_insert(conn.engine, stale_events).on_conflict_do_nothing(), stale_rows)
    return kept
