"""Baseline: the fault-injection journal (tests and benchmarks) as `create_all` made them when migrations began.

A fresh database gets every table; one made before migrations (tables, no
fault_journal_alembic_version) keeps its tables and rows, missing tables are added. The tables
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


def tables() -> sa.MetaData:
    """The schema at this revision (tests build a pre-migration database from it)."""
    md = sa.MetaData()
    sa.Table(
        "fault_target_journal",
        md,
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("method", sa.String(100), nullable=False),
        sa.Column("item_key", sa.String(450), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
    )
    return md


def upgrade() -> None:
    create_or_adopt(tables())


def downgrade() -> None:
    raise NotImplementedError("below the baseline there is no schema: restore a backup instead")
