"""The notification outbox: messages to a party (a vendor), written once, sent by a relay.

A real target as far as a saga is concerned: `queue_notifications` takes idempotency
keys (the same key twice is one message; `queue` hands back the one already stored),
`retract_notifications` is its compensation and `live_notification_keys` its verify.
A message still queued when retracted is cancelled and never leaves; one the relay
already dispatched cannot be unsent, so it is marked retracted and a correction
message is queued in the same transaction. Both stay on record, nothing is deleted.

Messages are generic (recipient, subject, body, entity): the workflow says what to send.
A message that names its `workflow` and `recipient_type` is drained by the relay
(sensors/outbox_relay.py), which claims it with a lease (`claim`), logs every attempt
before it sends (`notification_attempts`) and records what the channel said (`record`):
the `delivery` column is sent | delivered | retrying | bounced | failed, beside `status`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Optional

import dagster as dg
import sqlalchemy as sa

from orchestration.action.actions import ActionType
from orchestration.core import clock, settings
from orchestration.core.db import SeqType, UtcDateTime, engine_for, insert_ignoring_duplicates
from orchestration.core.schema_migrations import SchemaOwner
from orchestration.verification.outcome_reconciliation import Effect
from resources.env import resolved

outbox_metadata = sa.MetaData()

# queued -> dispatched (the relay took it: it may have left) -> retracted (a correction
# went after it); queued -> cancelled (retracted before it left, never sent).
LIVE = ("queued", "dispatched")
# What the channel said (column `delivery`, NULL until the relay recorded an attempt):
# retrying (a transient failure, tried again at next_attempt_at), sent (an SMTP server
# took it), delivered (a webhook receiver answered 2xx), bounced (a bounce came back
# later), failed (refused for good, by the receiver or by the relay's content policy).
SETTLED = ("sent", "delivered", "bounced", "failed")
UNDELIVERED = ("bounced", "failed")

notifications = sa.Table(
    "notification_outbox",
    outbox_metadata,
    sa.Column("id", SeqType, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(450), nullable=False, unique=True),
    sa.Column("kind", sa.String(20), nullable=False),  # notice | correction
    sa.Column("recipient", sa.String(200), nullable=False, index=True),
    sa.Column("entity", sa.String(200), index=True),  # what the message is about (an invoice)
    sa.Column("subject", sa.String(500), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("corrects", sa.String(450)),  # a correction: the key of the message it retracts
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("dispatched_at", UtcDateTime),
    sa.Column("voided_at", UtcDateTime),  # cancelled or retracted
    # The relay's columns. NULL workflow: no relay routes it (written before the relay existed).
    sa.Column("workflow", sa.String(100), index=True),
    sa.Column("recipient_type", sa.String(50)),  # the workflow's routing says which channel
    sa.Column("delivery", sa.String(20), index=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # claims so far
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("lease_until", UtcDateTime),
    sa.Column("next_attempt_at", UtcDateTime),
    sa.Column("sent_at", UtcDateTime),  # the channel took it (first time)
    sa.Column("channel_ref", sa.String(500)),  # Message-ID for email, the receiver's id for webhooks
    sa.Column("delivery_detail", sa.String(1000)),  # last SMTP reply / HTTP status / bounce reason
    sa.Column("delivery_updated_at", UtcDateTime),
    sa.Column("escalated_at", UtcDateTime),  # a failed or bounced message put in the review queue
)

# One row per send attempt, written before the channel is called and finished after it:
# an attempt with no `finished_at` is in doubt (the relay died in between; it may have left).
attempts = sa.Table(
    "notification_attempts",
    outbox_metadata,
    sa.Column("id", SeqType, primary_key=True, autoincrement=True),
    sa.Column("message_id", SeqType, nullable=False, index=True),
    sa.Column("idempotency_key", sa.String(450), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("relay", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(50), nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("outcome", sa.String(20)),  # sent | delivered | retrying | failed | refused
    sa.Column("detail", sa.String(1000)),
)


@dataclass(frozen=True)
class Claimed:
    """A message one relay holds until `lease_until`; `in_doubt` counts earlier attempts
    that started and never finished (each may have reached the receiver)."""

    message: dict
    lease_until: datetime
    in_doubt: int


# Migrated on its own (version table outbox_alembic_version): resources/migrations/outbox.
outbox_schema = SchemaOwner(
    "outbox",
    str(Path(__file__).parent / "migrations" / "outbox"),
    lambda: (outbox_metadata,),
    table_prefixes=("notification_",),
)


def correction_key(key: str) -> str:
    return f"correction:{key}"


def _now() -> datetime:
    return clock.now()


def _row(item: dict, now: datetime, **extra) -> dict:
    return {
        "idempotency_key": item["key"],
        "kind": "notice",
        "recipient": item["recipient"],
        "entity": item.get("entity"),
        "subject": item["subject"],
        "body": item.get("body") or {},
        "status": "queued",
        "created_at": now,
        "workflow": item.get("workflow"),
        "recipient_type": item.get("recipient_type"),
        **extra,
    }


class NotificationOutbox(dg.ConfigurableResource):
    """`url` unset means BOSUN_OUTBOX_DATABASE_URL, else the ERP's database."""

    url: Optional[str] = None

    @property
    def resolved_url(self) -> str:
        url = resolved(self.url)
        return settings.normalise_url(url) if url else settings.outbox_database_url()

    @property
    def engine(self) -> sa.Engine:
        return engine_for(self.resolved_url, (outbox_schema,))

    # ---- writes, idempotent by key, with their compensation ------------------------------
    def queue_notifications(self, items: list[dict]) -> dict[str, str]:
        """items: key, recipient, subject, body, entity. Returns per-key refusals (none here).
        A key already stored is left as it is: a replay sends nothing twice."""
        now = _now()
        rows = [_row(it, now) for it in items]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert_ignoring_duplicates(self.engine, notifications, ["idempotency_key"]), rows)
        return {}

    def queue(self, item: dict) -> dict:
        """One message; returns the stored one (the existing message if the key was used)."""
        self.queue_notifications([item])
        return self.messages([item["key"]])[item["key"]]

    def retract_notifications(self, items: list[dict]) -> None:
        """Cancel what is still queued; retract what was dispatched, with a correction."""
        keys = sorted({it["key"] for it in items})
        if not keys:
            return
        now = _now()
        eng = self.engine
        with eng.begin() as conn:
            # Queued, or claimed by a relay that has not started sending it (its attempt
            # would first set `delivery`, in one conditional UPDATE): it never left.
            conn.execute(
                notifications.update()
                .where(
                    notifications.c.idempotency_key.in_(keys),
                    sa.or_(
                        notifications.c.status == "queued",
                        sa.and_(notifications.c.status == "dispatched", notifications.c.delivery.is_(None)),
                    ),
                )
                .values(status="cancelled", voided_at=now, claimed_by=None, lease_until=None)
            )
            # A relay that dispatched one meanwhile has committed: it is seen here, never missed.
            sent = conn.execute(
                notifications.update()
                .where(notifications.c.idempotency_key.in_(keys), notifications.c.status == "dispatched")
                .values(status="retracted", voided_at=now)
                .returning(
                    notifications.c.idempotency_key,
                    notifications.c.recipient,
                    notifications.c.entity,
                    notifications.c.subject,
                    notifications.c.body,
                    notifications.c.workflow,
                    notifications.c.recipient_type,
                )
            ).all()
            # The correction goes the way the message went (same workflow, recipient type)
            # and carries its fields, so the workflow's correction template can name it.
            corrections = [
                {
                    "idempotency_key": correction_key(k),
                    "kind": "correction",
                    "recipient": to,
                    "entity": entity,
                    "subject": f"Correction: {subject}",
                    "body": {**(body or {}), "retracts": k, "text": "Please disregard our earlier message."},
                    "corrects": k,
                    "status": "queued",
                    "created_at": now,
                    "workflow": workflow,
                    "recipient_type": recipient_type,
                }
                for k, to, entity, subject, body, workflow, recipient_type in sent
            ]
            if corrections:
                conn.execute(insert_ignoring_duplicates(eng, notifications, ["idempotency_key"]), corrections)
            # Retracting a key whose message has not arrived consumes the key: a write that
            # timed out and lands later is then a no-op (as the ERP does).
            tombstones = [
                _row(it, now, status="cancelled", voided_at=now)
                for it in items
                if "recipient" in it and "subject" in it
            ]
            if tombstones:
                conn.execute(insert_ignoring_duplicates(eng, notifications, ["idempotency_key"]), tombstones)

    def live_notification_keys(self, keys: list[str]) -> set[str]:
        """Which of these keys are in effect now: queued or dispatched (a saga's verify)."""
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 5000):
                q = sa.select(notifications.c.idempotency_key).where(
                    notifications.c.idempotency_key.in_(keys[i : i + 5000]), notifications.c.status.in_(LIVE)
                )
                out |= {k for (k,) in conn.execute(q)}
        return out

    # ---- as a saga step and a reconciled target ----------------------------------------------
    def step(self, name: str, message: Callable[[dict], dict], target: str = "outbox") -> ActionType:
        """A saga step sending `message(item)` (recipient, subject, body, entity, workflow,
        recipient_type) under the step's idempotency key: queued once, retracted as its
        compensation (with a correction if it left), verified by being live."""

        def messages(items: list[dict]) -> list[dict]:
            return [{**message(it), "key": it["key"]} for it in items]

        return ActionType(
            name,
            do=lambda items: self.queue_notifications(messages(items)),
            compensate=lambda items: self.retract_notifications(messages(items)),
            verify=lambda items: self.live_notification_keys([it["key"] for it in items]),
            key=lambda saga_id: f"{name}:{saga_id}",
            target=target,
        )

    def effects(self, keys: list[str]) -> list[Effect]:
        """The messages under these keys, live or not (a reconciliation's view of the outbox)."""
        c = notifications.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.idempotency_key, c.status, c.entity).where(c.idempotency_key.in_(keys)))
            return [Effect(k, status in LIVE, entity or "") for k, status, entity in rows]

    def live_bodies(self, workflow: str) -> dict[str, dict]:
        """The body of every message of `workflow` in effect now (queued or dispatched), by key."""
        c = notifications.c
        q = sa.select(c.idempotency_key, c.body).where(c.workflow == workflow, c.kind == "notice", c.status.in_(LIVE))
        with self.engine.connect() as conn:
            return {k: body or {} for k, body in conn.execute(q)}

    # ---- the relay ------------------------------------------------------------------------
    def dispatch(self, limit: int = 1000) -> list[dict]:
        """Hand the oldest queued messages over (queued -> dispatched); returns them.
        One UPDATE: a retraction running at the same time either cancels a message first
        or sees it dispatched and corrects it."""
        candidate = notifications.alias("candidate")  # not correlated with the updated rows
        oldest = (
            sa.select(candidate.c.id)
            .where(candidate.c.status == "queued")
            .order_by(candidate.c.id)
            .limit(limit)
            .scalar_subquery()
        )
        with self.engine.begin() as conn:
            rows = (
                conn.execute(
                    notifications.update()
                    .where(notifications.c.id.in_(oldest), notifications.c.status == "queued")
                    .values(status="dispatched", dispatched_at=_now(), delivery="sending")
                    .returning(*notifications.c)
                )
                .mappings()
                .all()
            )
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    # ---- the relay's claim, attempts and outcomes ------------------------------------------
    @staticmethod
    def _claimable(table: sa.Table, workflows: list[str], now: datetime):
        c = table.c
        expired = sa.or_(c.lease_until.is_(None), c.lease_until < now)
        return sa.and_(
            c.workflow.in_(workflows),
            sa.or_(
                c.status == "queued",
                # A relay died holding it (never began, or began and never recorded): in doubt.
                sa.and_(
                    c.status == "dispatched",
                    sa.or_(c.delivery.is_(None), c.delivery == "sending"),
                    c.lease_until.is_not(None),
                    c.lease_until < now,
                ),
                sa.and_(c.status == "dispatched", c.delivery == "retrying", c.next_attempt_at <= now, expired),
            ),
        )

    def claim(self, holder: str, workflows: list[str], limit: int = 100, lease_s: float = 60.0) -> list[Claimed]:
        """Take up to `limit` messages to send, oldest first, for `lease_s` seconds.

        On Postgres the candidates are selected FOR UPDATE SKIP LOCKED (two relays take
        disjoint sets; the rows stay locked until this transaction commits), then updated by
        id. Not one UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED): the
        planner may run that subquery again per row, and each run skips the rows the last
        one locked, so the LIMIT is not kept. SQLite runs one writer at a time and evaluates
        the subquery once. Either way the UPDATE re-checks that each row is still claimable,
        so a message is held by one relay."""
        if not workflows:
            return []
        now = _now()
        eng = self.engine
        c = notifications.c
        claimable = self._claimable(notifications, workflows, now)
        # The candidates come from an alias: a subquery on the table being updated would be
        # correlated with each row (its LIMIT then picks every row).
        candidate = notifications.alias("candidate")
        pick = (
            sa.select(candidate.c.id)
            .where(self._claimable(candidate, workflows, now))
            .order_by(candidate.c.id)
            .limit(limit)
        )
        lease_until = now + timedelta(seconds=lease_s)
        take = (
            notifications.update()
            .values(
                status="dispatched",
                claimed_by=holder,
                lease_until=lease_until,
                dispatched_at=sa.func.coalesce(c.dispatched_at, now),
                attempts=c.attempts + 1,
            )
            .returning(*notifications.c)
        )
        with eng.begin() as conn:
            if eng.dialect.name == "postgresql":
                picked = list(conn.execute(pick.with_for_update(skip_locked=True)).scalars())
                rows = conn.execute(take.where(c.id.in_(picked), claimable)).mappings().all() if picked else []
            else:
                rows = conn.execute(take.where(c.id.in_(pick.scalar_subquery()), claimable)).mappings().all()
            ids = [r["id"] for r in rows]
            doubt: dict[int, int] = {}
            if ids:
                q = (
                    sa.select(attempts.c.message_id, sa.func.count())
                    .where(attempts.c.message_id.in_(ids), attempts.c.finished_at.is_(None))
                    .group_by(attempts.c.message_id)
                )
                doubt = dict(conn.execute(q).all())
        return sorted(
            (Claimed(dict(r), lease_until, doubt.get(r["id"], 0)) for r in rows), key=lambda m: m.message["id"]
        )

    def begin_attempt(self, claimed: Claimed, holder: str, channel: str) -> Optional[int]:
        """Log an attempt before the channel is called; None when the message is no longer
        this relay's to send (retracted, or its lease ran out and another relay took it)."""
        now = _now()
        msg = claimed.message
        with self.engine.begin() as conn:
            res = conn.execute(
                notifications.update()
                .where(
                    notifications.c.id == msg["id"],
                    notifications.c.status == "dispatched",
                    notifications.c.claimed_by == holder,
                    notifications.c.lease_until > now,
                )
                .values(delivery="sending", delivery_updated_at=now)
            )
            if res.rowcount != 1:
                return None
            return conn.execute(
                attempts.insert()
                .values(
                    message_id=msg["id"],
                    idempotency_key=msg["idempotency_key"],
                    attempt=msg["attempts"],
                    relay=holder,
                    channel=channel,
                    started_at=now,
                )
                .returning(attempts.c.id)
            ).scalar_one()

    def record(
        self,
        claimed: Claimed,
        holder: str,
        attempt_id: Optional[int],
        outcome: str,
        detail: str = "",
        ref: Optional[str] = None,
        next_attempt_at: Optional[datetime] = None,
    ) -> None:
        """What the channel said, in one transaction with the attempt's end. `outcome`: sent,
        delivered, retrying (with next_attempt_at), failed, or refused (the relay's content
        policy: recorded as delivery failed, nothing left)."""
        now = _now()
        c = notifications.c
        values: dict = {
            "delivery": "failed" if outcome == "refused" else outcome,
            "delivery_detail": detail[:1000],
            "delivery_updated_at": now,
            "claimed_by": None,
            "lease_until": None,
            "next_attempt_at": next_attempt_at,
        }
        if outcome in ("sent", "delivered"):
            values.update(sent_at=sa.func.coalesce(c.sent_at, now), channel_ref=ref)
        with self.engine.begin() as conn:
            if attempt_id is None:  # refused before any attempt: still one on record
                conn.execute(
                    attempts.insert().values(
                        message_id=claimed.message["id"],
                        idempotency_key=claimed.message["idempotency_key"],
                        attempt=claimed.message["attempts"],
                        relay=holder,
                        channel="none",
                        started_at=now,
                        finished_at=now,
                        outcome=outcome,
                        detail=detail[:1000],
                    )
                )
            else:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.id == attempt_id)
                    .values(finished_at=now, outcome=outcome, detail=detail[:1000])
                )
            conn.execute(
                notifications.update().where(c.id == claimed.message["id"], c.claimed_by == holder).values(**values)
            )

    def release(self, claimed: list[Claimed], holder: str) -> None:
        """Give back messages claimed and not begun (the relay's time ran out)."""
        ids = [m.message["id"] for m in claimed]
        if not ids:
            return
        c = notifications.c
        mine = sa.and_(c.id.in_(ids), c.claimed_by == holder)
        with self.engine.begin() as conn:
            conn.execute(
                notifications.update()
                .where(mine, c.delivery.is_(None))
                .values(status="queued", claimed_by=None, lease_until=None, attempts=c.attempts - 1)
            )
            conn.execute(
                notifications.update().where(mine).values(claimed_by=None, lease_until=None, attempts=c.attempts - 1)
            )

    def cancel_claimed(self, claimed: Claimed, holder: str, reason: str) -> bool:
        """A claimed message that must not leave after all (a correction of a message that
        never arrived): cancelled, with the reason; False if it was no longer this relay's."""
        now = _now()
        c = notifications.c
        with self.engine.begin() as conn:
            res = conn.execute(
                notifications.update()
                .where(c.id == claimed.message["id"], c.claimed_by == holder, c.delivery.is_(None))
                .values(
                    status="cancelled",
                    voided_at=now,
                    claimed_by=None,
                    lease_until=None,
                    delivery_detail=reason[:1000],
                    delivery_updated_at=now,
                )
            )
        return res.rowcount == 1

    def record_bounces(self, bounces: list[dict]) -> list[dict]:
        """bounces: {key or message_id, reason}. A message that left (sent, delivered, or in
        doubt) becomes bounced; returns the messages newly marked (a bounce read twice is one)."""
        now = _now()
        c = notifications.c
        out: list[dict] = []
        with self.engine.begin() as conn:
            for b in bounces:
                match = (c.idempotency_key == b["key"]) if b.get("key") else (c.channel_ref == b.get("message_id"))
                rows = (
                    conn.execute(
                        notifications.update()
                        .where(match, c.delivery.in_(("sent", "delivered", "sending")))
                        .values(
                            delivery="bounced", delivery_detail=str(b.get("reason", ""))[:1000], delivery_updated_at=now
                        )
                        .returning(*notifications.c)
                    )
                    .mappings()
                    .all()
                )
                out += [dict(r) for r in rows]
        return out

    def undelivered(self, workflows: list[str], escalated: bool = False, limit: int = 1000) -> list[dict]:
        """Failed or bounced messages (not yet escalated, unless `escalated`)."""
        c = notifications.c
        q = sa.select(notifications).where(c.workflow.in_(workflows), c.delivery.in_(UNDELIVERED))
        if not escalated:
            q = q.where(c.escalated_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(c.id).limit(limit)).mappings()]

    def mark_escalated(self, ids: list[int]) -> None:
        if ids:
            with self.engine.begin() as conn:
                conn.execute(notifications.update().where(notifications.c.id.in_(ids)).values(escalated_at=_now()))

    def delivery_figures(self, workflows: Optional[list[str]] = None) -> dict[str, int]:
        """Messages per state: queued, cancelled, retracted, and per delivery of the rest."""
        c = notifications.c
        state = sa.case(
            (c.status.in_(("queued", "cancelled")), c.status), else_=sa.func.coalesce(c.delivery, "sending")
        )
        q = sa.select(state, sa.func.count()).group_by(state)
        if workflows is not None:
            q = q.where(c.workflow.in_(workflows))
        with self.engine.connect() as conn:
            return {k: int(n) for k, n in conn.execute(q).all()}

    def attempts_for(self, key: str) -> list[dict]:
        with self.engine.connect() as conn:
            q = sa.select(attempts).where(attempts.c.idempotency_key == key).order_by(attempts.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]

    # ---- reads ----------------------------------------------------------------------------
    def messages(self, keys: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 5000):
                q = sa.select(notifications).where(notifications.c.idempotency_key.in_(keys[i : i + 5000]))
                out.update({r["idempotency_key"]: dict(r) for r in conn.execute(q).mappings()})
        return out

    def messages_about(self, entity: str) -> list[dict]:
        with self.engine.connect() as conn:
            q = sa.select(notifications).where(notifications.c.entity == entity).order_by(notifications.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]
