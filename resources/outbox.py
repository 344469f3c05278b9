"""The notification outbox: messages to a party (a vendor), written once, sent by a relay.

A real target as far as a saga is concerned: `queue_notifications` takes idempotency
keys (the same key twice is one message; `queue` hands back the one already stored),
`retract_notifications` is its compensation and `live_notification_keys` its verify.
A message still queued when retracted is cancelled and never leaves; one the relay
already dispatched cannot be unsent, so it is marked retracted and a correction
message is queued in the same transaction. Both stay on record, nothing is deleted.

Messages are generic (recipient, subject, body, entity): the workflow says what to send.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import dagster as dg
import sqlalchemy as sa

from orchestration import settings
from orchestration.db import SeqType, UtcDateTime, engine_for, insert_ignoring_duplicates
from orchestration.schema_migrations import SchemaOwner
from orchestration import clock
from resources.env import resolved

outbox_metadata = sa.MetaData()

# queued -> dispatched (the relay sent it) -> retracted (a correction went after it);
# queued -> cancelled (retracted before it left).
LIVE = ("queued", "dispatched")

notifications = sa.Table(
    "notification_outbox", outbox_metadata,
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
)

# Migrated on its own (version table outbox_alembic_version): resources/migrations/outbox.
outbox_schema = SchemaOwner("outbox", str(Path(__file__).parent / "migrations" / "outbox"), lambda: (outbox_metadata,),
                            table_prefixes=("notification_",))


def correction_key(key: str) -> str:
    return f"correction:{key}"


def _now() -> datetime:
    return clock.now()


def _row(item: dict, now: datetime, **extra) -> dict:
    return {"idempotency_key": item["key"], "kind": "notice", "recipient": item["recipient"],
            "entity": item.get("entity"), "subject": item["subject"], "body": item.get("body") or {},
            "status": "queued", "created_at": now, **extra}


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
            conn.execute(notifications.update()
                         .where(notifications.c.idempotency_key.in_(keys), notifications.c.status == "queued")
                         .values(status="cancelled", voided_at=now))
            # A relay that dispatched one meanwhile has committed: it is seen here, never missed.
            sent = conn.execute(notifications.update()
                                .where(notifications.c.idempotency_key.in_(keys),
                                       notifications.c.status == "dispatched")
                                .values(status="retracted", voided_at=now)
                                .returning(notifications.c.idempotency_key, notifications.c.recipient,
                                           notifications.c.entity, notifications.c.subject)).all()
            corrections = [{"idempotency_key": correction_key(k), "kind": "correction", "recipient": to,
                            "entity": entity, "subject": f"Correction: {subject}",
                            "body": {"retracts": k, "text": "Please disregard our earlier message."},
                            "corrects": k, "status": "queued", "created_at": now}
                           for k, to, entity, subject in sent]
            if corrections:
                conn.execute(insert_ignoring_duplicates(eng, notifications, ["idempotency_key"]), corrections)
            # Retracting a key whose message has not arrived consumes the key: a write that
            # timed out and lands later is then a no-op (as the ERP does).
            tombstones = [_row(it, now, status="cancelled", voided_at=now) for it in items
                          if "recipient" in it and "subject" in it]
            if tombstones:
                conn.execute(insert_ignoring_duplicates(eng, notifications, ["idempotency_key"]), tombstones)

    def live_notification_keys(self, keys: list[str]) -> set[str]:
        """Which of these keys are in effect now: queued or dispatched (a saga's verify)."""
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 5000):
                q = sa.select(notifications.c.idempotency_key).where(
                    notifications.c.idempotency_key.in_(keys[i:i + 5000]), notifications.c.status.in_(LIVE))
                out |= {k for (k,) in conn.execute(q)}
        return out

    # ---- the relay ------------------------------------------------------------------------
    def dispatch(self, limit: int = 1000) -> list[dict]:
        """Hand the oldest queued messages over (queued -> dispatched); returns them.
        One UPDATE: a retraction running at the same time either cancels a message first
        or sees it dispatched and corrects it."""
        oldest = (sa.select(notifications.c.id).where(notifications.c.status == "queued")
                  .order_by(notifications.c.id).limit(limit).scalar_subquery())
        with self.engine.begin() as conn:
            rows = conn.execute(notifications.update()
                                .where(notifications.c.id.in_(oldest), notifications.c.status == "queued")
                                .values(status="dispatched", dispatched_at=_now())
                                .returning(*notifications.c)).mappings().all()
        return sorted((dict(r) for r in rows), key=lambda r: r["id"])

    # ---- reads ----------------------------------------------------------------------------
    def messages(self, keys: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 5000):
                q = sa.select(notifications).where(notifications.c.idempotency_key.in_(keys[i:i + 5000]))
                out.update({r["idempotency_key"]: dict(r) for r in conn.execute(q).mappings()})
        return out

    def messages_about(self, entity: str) -> list[dict]:
        with self.engine.connect() as conn:
            q = sa.select(notifications).where(notifications.c.entity == entity).order_by(notifications.c.id)
            return [dict(r) for r in conn.execute(q).mappings()]
