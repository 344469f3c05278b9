"""The ERP: vendors, purchase orders, the ledger and payments, in a SQL database.

A real target system as far as Bosun is concerned: its write APIs take idempotency keys
(as payment APIs do), so a replayed action is a no-op, and each write has a compensating
call. Writes take many items per call so a batch costs one round trip per step. The
mechanics every SQL target shares are the engine's: writes once by key, voids with a
tombstone, live keys and rows for reconciliation (orchestration/action/keyed_table.py), reads
of many keys in chunks (orchestration/core/db.py); here are the ERP's tables and its queries.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dagster as dg
import sqlalchemy as sa

from orchestration.action.keyed_table import KeyedTable
from orchestration.core import clock, settings
from orchestration.core.db import chunks, engine_for, frame_in, insert_ignoring_duplicates, rows_in
from orchestration.core.schema_migrations import SchemaOwner
from resources.env import resolved

if TYPE_CHECKING:
    import pandas as pd

erp_metadata = sa.MetaData()
Money = sa.Numeric(16, 2)

vendors = sa.Table(
    "erp_vendors",
    erp_metadata,
    sa.Column("vendor_id", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("country", sa.String(2)),
    sa.Column("currency", sa.String(3)),
    sa.Column("risk_tier", sa.String(20), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("iban", sa.String(64)),
)
purchase_orders = sa.Table(
    "erp_purchase_orders",
    erp_metadata,
    sa.Column("po_number", sa.String(100), primary_key=True),
    sa.Column("vendor_id", sa.String(100), nullable=False, index=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("opened_on", sa.Date),
)
ledger_entries = sa.Table(
    "erp_ledger_entries",
    erp_metadata,
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
payments = sa.Table(
    "erp_payments",
    erp_metadata,
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
# The bank's settlement feed: what became of each scheduled payment, reported later.
# Append-only (a payment settled today may be returned next week); a payment's latest
# report is its state. Keyed by the payment's idempotency key, as the bank echoes it.
settlements = sa.Table(
    "erp_settlements",
    erp_metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("payment_key", sa.String(450), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),  # settled | failed | returned
    sa.Column("amount", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),  # when the bank says it happened
    sa.Column("reason", sa.String(200)),
    sa.UniqueConstraint("payment_key", "status", name="uq_erp_settlements_payment_status"),
)
SETTLEMENT_STATUSES = ("settled", "failed", "returned")

# The ERP's tables are migrated on their own (version table erp_alembic_version), in
# whichever database the ERP lives: assets/invoices/migrations/erp.
erp_schema = SchemaOwner(
    "erp", str(Path(__file__).parent / "migrations" / "erp"), lambda: (erp_metadata,), table_prefixes=("erp_",)
)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _money_row(item: dict, **extra) -> dict:
    return {
        "idempotency_key": item["key"],
        "invoice_id": item["invoice_id"],
        "vendor_id": item["vendor_id"],
        "po_number": item["po_number"],
        "amount": Decimal(item["amount"]),
        "currency": item["currency"],
        **extra,
    }


def _day(value) -> date:
    """A date from whatever the sample data or a saga item holds (date, datetime or ISO text).
    No pandas: the saga's ERP writes run under per-call timeouts, and a first import of pandas
    inside one (seconds on a loaded host) would time the write out."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:  # a timestamp
        return datetime.fromisoformat(str(value)).date()


def _decimal_amounts(df: pd.DataFrame) -> pd.DataFrame:
    df["amount"] = df["amount"].map(lambda v: Decimal(str(v)))
    return df


# The two tables the payment saga writes, by idempotency key, each with its compensation.
# A compensated item without the invoice's fields (nothing to tombstone) only voids.
LEDGER = KeyedTable(ledger_entries, "posted", "reversed", "reversed_at", ("invoice_id",))
PAYMENTS = KeyedTable(payments, "scheduled", "cancelled", "cancelled_at", ("invoice_id",))
EFFECT_COLUMNS = ("invoice_id", "vendor_id", "amount", "currency")


class ERPResource(dg.ConfigurableResource):
    """`url` unset means BOSUN_ERP_DATABASE_URL, else Bosun's own database."""

    url: Optional[str] = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # The ERP's reads return pandas frames, and the context layer reads them under per-call
        # timeouts: a run imports pandas here, when its resources start, never inside a timed
        # read (the code location itself loads without it). Not outside a run: a sensor's ERP
        # calls (the recovery sensor's sagas) are writes, which need no pandas, and pandas would
        # stay in the long-lived code server that evaluates the sensors (~45 MiB).
        if context.run is not None:
            import pandas  # noqa: F401

    @property
    def resolved_url(self) -> str:
        url = resolved(self.url)
        return settings.normalise_url(url) if url else settings.erp_database_url()

    @property
    def engine(self) -> sa.Engine:
        return engine_for(self.resolved_url, (erp_schema,))

    # ---- master data ---------------------------------------------------------------
    def load_master_data(self, vendor_rows: list[dict], po_rows: list[dict]) -> None:
        """Seed vendors and purchase orders (sample data); existing rows are kept."""
        eng = self.engine
        pos = [
            {
                **p,
                "amount": Decimal(p["amount"]),
                "opened_on": _day(p["opened_on"]) if p.get("opened_on") else None,
            }
            for p in po_rows
        ]
        with eng.begin() as conn:
            if vendor_rows:
                conn.execute(insert_ignoring_duplicates(eng, vendors, ["vendor_id"]), vendor_rows)
            for part in chunks(pos):
                conn.execute(insert_ignoring_duplicates(eng, purchase_orders, ["po_number"]), part)

    def vendors_frame(self) -> pd.DataFrame:
        import pandas as pd

        with self.engine.connect() as conn:
            return pd.read_sql(sa.select(vendors), conn)

    def purchase_orders_frame(self) -> pd.DataFrame:
        import pandas as pd

        with self.engine.connect() as conn:
            return _decimal_amounts(pd.read_sql(sa.select(purchase_orders), conn))

    # ---- reads the decision needs live (one query per source per batch) ---------------
    def vendors_by_id(self, vendor_ids: list[str]) -> pd.DataFrame:
        return frame_in(self.engine, vendors, vendors.c.vendor_id, vendor_ids)

    def purchase_orders_by_number(self, po_numbers: list[str]) -> pd.DataFrame:
        return _decimal_amounts(frame_in(self.engine, purchase_orders, purchase_orders.c.po_number, po_numbers))

    def paid_invoices(self, invoice_ids: list[str]) -> dict[tuple[str, str], list[str]]:
        """(vendor_id, invoice_id) -> idempotency keys of its live (not cancelled) payments."""
        out: dict[tuple[str, str], list[str]] = {}
        q = sa.select(payments.c.vendor_id, payments.c.invoice_id, payments.c.idempotency_key).where(
            payments.c.status == "scheduled"
        )
        with self.engine.connect() as conn:
            for r in rows_in(conn, q, payments.c.invoice_id, invoice_ids):
                out.setdefault((r["vendor_id"], r["invoice_id"]), []).append(r["idempotency_key"])
        return out

    def paid_per_po(self, po_numbers: list[str]) -> dict[str, Decimal]:
        q = (
            sa.select(payments.c.po_number, sa.func.sum(payments.c.amount).label("paid"))
            .where(payments.c.status == "scheduled")
            .group_by(payments.c.po_number)
        )
        with self.engine.connect() as conn:
            return {r["po_number"]: Decimal(str(r["paid"])) for r in rows_in(conn, q, payments.c.po_number, po_numbers)}

    # ---- writes, idempotent by key, each with its compensation --------------------------
    def post_ledger_entries(self, items: list[dict]) -> dict[str, str]:
        """items: key, invoice_id, vendor_id, po_number, amount, currency. Returns per-key errors."""
        LEDGER.insert_once(self.engine, [_money_row(it, status="posted", posted_at=clock.now()) for it in items])
        return {}

    def reverse_ledger_entries(self, items: list[dict]) -> None:
        LEDGER.void(
            self.engine, items, lambda it, now: _money_row(it, status="reversed", posted_at=now, reversed_at=now)
        )

    def schedule_payments(self, items: list[dict]) -> dict[str, str]:
        PAYMENTS.insert_once(
            self.engine,
            [_money_row(it, status="scheduled", scheduled_at=clock.now(), due_on=_day(it["due_on"])) for it in items],
        )
        return {}

    def cancel_payments(self, items: list[dict]) -> None:
        PAYMENTS.void(
            self.engine,
            items,
            lambda it, now: _money_row(
                it, status="cancelled", scheduled_at=now, cancelled_at=now, due_on=_day(it["due_on"])
            ),
        )

    def live_ledger_keys(self, keys: list[str]) -> set[str]:
        """Which of these ledger idempotency keys are posted now (a saga's `verify`)."""
        return LEDGER.live_keys(self.engine, keys)

    def live_payment_keys(self, keys: list[str]) -> set[str]:
        return PAYMENTS.live_keys(self.engine, keys)

    def master_data_for(self, vendor_ids: list[str], po_numbers: list[str]) -> tuple[dict, dict]:
        """Live vendor and PO rows (dicts by id) for a batch's prerequisite checks."""
        with self.engine.connect() as conn:
            vs = {
                r["vendor_id"]: dict(r)
                for r in rows_in(conn, sa.select(vendors), vendors.c.vendor_id, sorted(set(vendor_ids)))
            }
            ps = {
                r["po_number"]: dict(r)
                for r in rows_in(conn, sa.select(purchase_orders), purchase_orders.c.po_number, sorted(set(po_numbers)))
            }
        return vs, ps

    # ---- what verification needs ----------------------------------------------------------
    def invoices_paid_twice(self) -> list[dict]:
        q = (
            sa.select(payments.c.vendor_id, payments.c.invoice_id, sa.func.count().label("payments"))
            .where(payments.c.status == "scheduled")
            .group_by(payments.c.vendor_id, payments.c.invoice_id)
            .having(sa.func.count() > 1)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def payments_over_po(self, tolerance: Decimal) -> list[dict]:
        paid = (
            sa.select(payments.c.po_number, sa.func.sum(payments.c.amount).label("paid"))
            .where(payments.c.status == "scheduled")
            .group_by(payments.c.po_number)
            .subquery()
        )
        q = (
            sa.select(paid.c.po_number, paid.c.paid, purchase_orders.c.amount.label("po_amount"))
            .join(purchase_orders, purchase_orders.c.po_number == paid.c.po_number, isouter=True)
            .where(
                sa.or_(purchase_orders.c.po_number.is_(None), paid.c.paid > purchase_orders.c.amount * (1 + tolerance))
            )
        )
        with self.engine.connect() as conn:
            return [
                {k: (str(v) if isinstance(v, Decimal) else v) for k, v in r.items()} for r in conn.execute(q).mappings()
            ]

    def live_ledger_entries(self, invoice_id: str | None = None) -> list[dict]:
        return LEDGER.live_rows(self.engine, **({"invoice_id": invoice_id} if invoice_id else {}))

    def live_payments(self) -> list[dict]:
        return PAYMENTS.live_rows(self.engine)

    def effects_for(self, keys: list[str], invoice_ids: list[str]) -> list[dict]:
        """Ledger entries and payments, live or voided, with one of these idempotency keys or
        for one of these invoices: every row a batch's reconciliation must account for."""
        return [
            {**r, "kind": kind}
            for table, kind in ((LEDGER, "ledger_entry"), (PAYMENTS, "payment"))
            for r in table.rows_for(self.engine, keys, "invoice_id", invoice_ids, EFFECT_COLUMNS)
        ]

    # ---- the settlement feed ----------------------------------------------------------------
    def record_settlements(self, rows: list[dict]) -> int:
        """rows: payment_key, status, amount, currency, settled_at[, reason]. A report the feed
        already has is ignored (the bank re-sends). Returns rows offered."""
        if rows:
            bad = sorted({r["status"] for r in rows} - set(SETTLEMENT_STATUSES))
            if bad:
                raise ValueError(f"unknown settlement status {bad}; expected one of {SETTLEMENT_STATUSES}")
            with self.engine.begin() as conn:
                # Stored in UTC: SQLite keeps no offset, so every timestamp is written as UTC.
                conn.execute(
                    insert_ignoring_duplicates(self.engine, settlements, ["payment_key", "status"]),
                    [
                        {
                            **r,
                            "amount": Decimal(str(r["amount"])),
                            "settled_at": _utc(r["settled_at"]),
                            "reason": r.get("reason"),
                        }
                        for r in rows
                    ],
                )
        return len(rows)

    def payments_due_between(self, start, end) -> list[dict]:
        """Live (scheduled) payments with due_on in [start, end)."""
        q = sa.select(
            payments.c.idempotency_key,
            payments.c.invoice_id,
            payments.c.vendor_id,
            payments.c.amount,
            payments.c.currency,
            payments.c.due_on,
            payments.c.scheduled_at,
        ).where(payments.c.status == "scheduled", payments.c.due_on >= start, payments.c.due_on < end)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(payments.c.due_on, payments.c.idempotency_key)).mappings()]

    def settlement_reports(self, payment_keys: list[str], reported_by=None) -> dict[str, list[dict]]:
        """payment key -> its feed rows (oldest first), those reported by `reported_by` if given."""
        out: dict[str, list[dict]] = {}
        q = sa.select(settlements).order_by(settlements.c.settled_at, settlements.c.id)
        if reported_by is not None:
            q = q.where(settlements.c.settled_at <= _utc(reported_by))
        with self.engine.connect() as conn:
            for r in rows_in(conn, q, settlements.c.payment_key, payment_keys):
                out.setdefault(r["payment_key"], []).append(dict(r))
        return out
