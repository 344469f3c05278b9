"""Baseline: the sample ERP's tables (vendors, purchase orders, ledger, payments, settlements) as `create_all` made them when migrations began.

A fresh database gets every table; one made before migrations (tables, no
erp_alembic_version) keeps its tables and rows, missing tables are added. The tables
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

Money = sa.Numeric(16, 2)


def tables() -> sa.MetaData:
    """The schema at this revision (tests build a pre-migration database from it)."""
    md = sa.MetaData()
    sa.Table(
        "erp_vendors",
        md,
        sa.Column("vendor_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("risk_tier", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("iban", sa.String(64)),
    )
    sa.Table(
        "erp_purchase_orders",
        md,
        sa.Column("po_number", sa.String(100), primary_key=True),
        sa.Column("vendor_id", sa.String(100), nullable=False, index=True),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("opened_on", sa.Date),
    )
    sa.Table(
        "erp_ledger_entries",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(450), nullable=False, unique=True),
        sa.Column("invoice_id", sa.String(100), nullable=False, index=True),
        sa.Column("vendor_id", sa.String(100), nullable=False),
        sa.Column("po_number", sa.String(100)),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        # posted -> reversed: a reversal is kept, never deleted, as an accountant would expect
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reversed_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "erp_payments",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(450), nullable=False, unique=True),
        sa.Column("invoice_id", sa.String(100), nullable=False, index=True),
        sa.Column("vendor_id", sa.String(100), nullable=False),
        sa.Column("po_number", sa.String(100), index=True),
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("due_on", sa.Date),
        # scheduled -> cancelled
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "erp_settlements",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("payment_key", sa.String(450), nullable=False, index=True),
        sa.Column("status", sa.String(20), nullable=False),  # settled | failed | returned
        sa.Column("amount", Money, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),  # when the bank says it happened
        sa.Column("reason", sa.String(200)),
        sa.UniqueConstraint("payment_key", "status", name="uq_erp_settlements_payment_status"),
    )
    return md


def upgrade() -> None:
    create_or_adopt(tables())


def downgrade() -> None:
    raise NotImplementedError("below the baseline there is no schema: restore a backup instead")
