"""Baseline: the notification outbox's table as `create_all` made them when migrations began.

A fresh database gets every table; one made before migrations (tables, no
outbox_alembic_version) keeps its tables and rows, missing tables are added. The tables
below are frozen copies, never imports: later revisions describe each change.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

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
    sa.Table(
        "notification_outbox",
        md,
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
    return md


def upgrade() -> None:
    create_or_adopt(tables())


def downgrade() -> None:
    raise NotImplementedError("below the baseline there is no schema: restore a backup instead")
