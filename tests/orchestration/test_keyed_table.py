"""A target's own table written by idempotency key (orchestration/action/keyed_table.py), and
reads of more keys than one IN list holds (orchestration/core/db.py), on SQLite."""

import sqlalchemy as sa

from orchestration.action.keyed_table import KeyedTable
from orchestration.core.db import IN_CHUNK, engine_for, rows_in

meta = sa.MetaData()
orders = sa.Table(
    "toy_orders",
    meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(100), nullable=False, unique=True),
    sa.Column("order_id", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
)
ORDERS = KeyedTable(orders, "placed", "cancelled", "cancelled_at", ("order_id",))


def _engine(tmp_path) -> sa.Engine:
    engine = engine_for(f"sqlite:///{tmp_path / 'target.db'}")
    meta.create_all(engine)
    return engine


def _row(key: str, order_id: str, status: str = "placed") -> dict:
    return {"idempotency_key": key, "order_id": order_id, "status": status}


def test_reads_of_more_keys_than_one_in_list_find_every_row(tmp_path):
    engine = _engine(tmp_path)
    keys = [f"k{i}" for i in range(2 * IN_CHUNK + 1)]
    ORDERS.insert_once(engine, [_row(k, "o1") for k in keys])
    assert ORDERS.live_keys(engine, keys + ["unknown"]) == set(keys)
    with engine.connect() as conn:
        assert sum(1 for _ in rows_in(conn, sa.select(orders.c.id), orders.c.idempotency_key, keys)) == len(keys)


def test_a_replayed_write_is_a_no_op_and_a_void_before_the_write_consumes_the_key(tmp_path):
    engine = _engine(tmp_path)
    ORDERS.insert_once(engine, [_row("a", "o1")])
    ORDERS.insert_once(engine, [_row("a", "o1-changed")])
    tombstone = lambda it, now: {**_row(it["key"], it["order_id"], "cancelled"), "cancelled_at": now}  # noqa: E731
    ORDERS.void(engine, [{"key": "a", "order_id": "o1"}, {"key": "late", "order_id": "o2"}], tombstone)
    ORDERS.insert_once(engine, [_row("late", "o2")])  # the write that timed out lands after its void
    assert ORDERS.live_keys(engine, ["a", "late"]) == set() and ORDERS.live_rows(engine) == []
    rows = {r["idempotency_key"]: r for r in ORDERS.rows_for(engine, ["a"], "order_id", ["o2"], ("order_id",))}
    assert rows.keys() == {"a", "late"} and not rows["a"]["live"] and rows["a"]["order_id"] == "o1"
    # An item without what a tombstone needs only voids: no row for a key never written.
    ORDERS.void(engine, [{"key": "never"}], tombstone)
    assert ORDERS.rows_for(engine, ["never"], "order_id", [], ("order_id",)) == []
