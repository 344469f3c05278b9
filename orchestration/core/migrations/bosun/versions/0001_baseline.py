"""Baseline: Bosun's engine tables as `create_all` made them when migrations began.

A fresh database gets every table. A database made before migrations (tables, no
bosun_alembic_version) keeps its tables and rows; two older shapes are first brought to
today's, rows kept:
- bosun_content_seen keyed by (type, content_hash), as hostile delivery first made it
  (d323c16): since bd34b4d every event kept with a content is a row, keyed
  (type, content_hash, first_key). Each old row is one such event, so every row stays as it is.
- bosun_leases keyed by `name` with a datetime expiry (one lease per workflow, bd34b4d on the
  trigger layer's branch): since f983d13 one lease per entity, expiry in epoch seconds. The
  rows move over (name becomes entity_key; an empty holder stays empty).

The tables below are frozen copies, never imports: the application's definitions move on,
and later revisions describe each move.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import timezone

import sqlalchemy as sa
from alembic import op

from orchestration.core.schema_migrations import create_or_adopt

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)


def tables() -> sa.MetaData:
    """The schema at this revision (tests build a pre-migration database from it)."""
    md = sa.MetaData()
    # orchestration/core/db.py
    sa.Table(
        "bosun_inbox",
        md,
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(450), nullable=False, unique=True),
        sa.Column("source", sa.String(200)),
        sa.Column("event_id", sa.String(200)),
        sa.Column("type", sa.String(200)),
        sa.Column("schema_version", sa.Integer),
        sa.Column("occurred_at", UtcDateTime),
        sa.Column("entity_key", sa.String(200)),
        sa.Column("payload", sa.JSON),
        sa.Column("received_at", UtcDateTime, nullable=False),
        # received -> done | escalated | rejected | dead_lettered | retried (the terminal states)
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("outcome", sa.JSON),
        sa.Column("batch_id", sa.String(64), index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duplicate_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UtcDateTime),
        sa.Index("ix_bosun_inbox_type_seq", "type", "seq"),
    )
    sa.Table(
        "bosun_dead_letters",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(450), nullable=False, unique=True),
        sa.Column("current_key", sa.String(450), nullable=False),
        sa.Column("type", sa.String(200), index=True),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", UtcDateTime, nullable=False),
        sa.Column("last_failed_at", UtcDateTime, nullable=False),
        # open -> retried (re-enqueued; open again if the retry fails) | dropped (with a reason)
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.Text),
        sa.Column("updated_at", UtcDateTime),
    )
    sa.Table(
        "bosun_content_seen",
        md,
        sa.Column("type", sa.String(200), primary_key=True),
        sa.Column("content_hash", sa.String(64), primary_key=True),
        sa.Column("first_key", sa.String(450), primary_key=True),  # each event kept with this content
        sa.Column("first_occurred_at", UtcDateTime, nullable=False),
    )
    sa.Table(
        "bosun_triage_passed",
        md,
        sa.Column("idempotency_key", sa.String(450), primary_key=True),
        sa.Column("batch_id", sa.String(64)),
    )
    sa.Table(
        "bosun_entity_clock",
        md,
        sa.Column("type", sa.String(200), primary_key=True),
        sa.Column("entity_key", sa.String(200), primary_key=True),
        sa.Column("last_occurred_at", UtcDateTime, nullable=False),
        sa.Column("last_key", sa.String(450), nullable=False),
    )
    sa.Table(
        "bosun_stale_events",
        md,
        sa.Column("idempotency_key", sa.String(450), primary_key=True),
        sa.Column("type", sa.String(200)),
        sa.Column("entity_key", sa.String(200)),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("newer_key", sa.String(450), nullable=False),
        sa.Column("newer_occurred_at", UtcDateTime, nullable=False),
        sa.Column("policy", sa.String(20), nullable=False),  # ignore | process
        sa.Column("batch_id", sa.String(64)),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
    )
    sa.Table(
        "bosun_triage_lock",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "bosun_api_keys",
        md,
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("rate_per_s", sa.Float, nullable=False),
        sa.Column("burst", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime),
    )
    sa.Table(
        "bosun_review_queue",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(450), nullable=False, unique=True),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("entity_key", sa.String(200)),
        sa.Column("proposal", sa.JSON, nullable=False),
        sa.Column("confidence", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    sa.Table(
        "bosun_feedback",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(450), nullable=False, index=True),  # the event's idempotency key
        sa.Column("kind", sa.String(20), nullable=False),  # approve, reject, correct
        sa.Column("label", sa.String(50), nullable=False),  # the right decision, as a reviewer says
        sa.Column("decided", sa.String(50)),  # what Bosun decided or proposed
        sa.Column("note", sa.Text),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("review_id", sa.BigInteger),
        sa.Column("created_at", UtcDateTime, nullable=False, index=True),
    )
    sa.Table(
        "bosun_audit_log",
        md,
        sa.Column("seq", SeqType, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("batch_id", sa.String(64), index=True),
        sa.Column("subject", sa.String(450), index=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    sa.Table(
        "bosun_audit_head",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    sa.Table(
        "bosun_audit_checkpoints",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),  # the last pruned record
        sa.Column("last_hash", sa.String(64), nullable=False),  # its hash: the next record's prev_hash
        sa.Column("prev_hash", sa.String(64), nullable=False),  # what the archived segment starts from
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("archive", sa.String(1000), nullable=False),
        sa.Column("archive_sha256", sa.String(64), nullable=False),
        sa.Column("cutoff", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    # orchestration/decision/llm_ledger.py
    sa.Table(
        "bosun_llm_cache",
        md,
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "bosun_llm_spend",
        md,
        sa.Column("workflow", sa.String(100), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost", sa.Float, nullable=False, server_default="0"),
        sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
    )
    # orchestration/action/circuit_breaker.py
    sa.Table(
        "bosun_circuit_breakers",
        md,
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("open_until", UtcDateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("last_success_at", UtcDateTime),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    # orchestration/verification/metrics.py
    sa.Table(
        "bosun_batch_metrics",
        md,
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(100), nullable=False, index=True),
        sa.Column("batch_id", sa.String(64), index=True),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float),  # run start to its last outcome
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        # {"outcomes": {status: n}, "decisions": {"decision|route": n}, "guardrails": {name: n},
        #  "models": {model: n}}
        sa.Column("counts", sa.JSON, nullable=False),
        # {"confidence": {"counts": [...], "sum": x}, "latency_s": {...}}: per bucket, not cumulative
        sa.Column("histograms", sa.JSON, nullable=False),
    )
    # orchestration/action/saga_log.py
    sa.Table(
        "bosun_sagas",
        md,
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
    sa.Table(
        "bosun_saga_steps",
        md,
        sa.Column("saga_id", sa.String(450), primary_key=True),
        sa.Column("step", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    sa.Table(
        "bosun_leases",
        md,
        sa.Column("entity_key", sa.String(450), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    sa.Table(
        "bosun_rate_buckets",
        md,
        sa.Column("target", sa.String(200), primary_key=True),
        # The time at which the next call may start (a token bucket of depth `burst`
        # kept as its theoretical arrival time, GCRA).
        sa.Column("next_at", sa.Float, nullable=False),
    )
    sa.Table(
        "bosun_target_calls",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("items", sa.Integer, nullable=False),
    )

    return md


def upgrade() -> None:
    frozen = tables()
    old_leases = []
    if not op.get_context().as_sql:  # online: the bind is a live connection
        bind = op.get_bind()
        _content_seen_keyed_by_event(bind, frozen.tables["bosun_content_seen"])
        old_leases = _take_leases_per_workflow(bind)
    create_or_adopt(frozen)
    if old_leases:
        op.bulk_insert(frozen.tables["bosun_leases"], old_leases)


def downgrade() -> None:
    raise NotImplementedError("below the baseline there is no schema: restore a backup instead")


def _content_seen_keyed_by_event(bind: sa.Connection, today: sa.Table) -> None:
    inspector = sa.inspect(bind)
    if "bosun_content_seen" not in inspector.get_table_names():
        return
    key = inspector.get_pk_constraint("bosun_content_seen")
    if sorted(key["constrained_columns"]) != ["content_hash", "type"]:
        return
    if bind.dialect.name == "sqlite":
        # SQLite cannot change a key in place: batch mode makes today's table and copies
        # the rows into it.
        with op.batch_alter_table("bosun_content_seen", recreate="always", copy_from=today):
            pass
    else:
        op.drop_constraint(key["name"], "bosun_content_seen", type_="primary")
        op.create_primary_key("bosun_content_seen_pkey", "bosun_content_seen", ["type", "content_hash", "first_key"])


def _take_leases_per_workflow(bind: sa.Connection) -> list[dict]:
    """The rows of a per-workflow lease table, which is dropped (today's is created after)."""
    inspector = sa.inspect(bind)
    if "bosun_leases" not in inspector.get_table_names():
        return []
    if {c["name"] for c in inspector.get_columns("bosun_leases")} >= {"entity_key"}:
        return []
    old = sa.Table("bosun_leases", sa.MetaData(), autoload_with=bind)
    rows = [
        {"entity_key": r["name"], "holder": r["holder"] or "", "expires_at": _epoch(r["expires_at"])}
        for r in bind.execute(sa.select(old)).mappings()
    ]
    op.drop_table("bosun_leases")
    return rows


def _epoch(value) -> float:
    if isinstance(value, str):  # SQLite may hand back the stored text
        from datetime import datetime

        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
