"""Schema migrations: fresh databases reach the head, databases made by create_all before
migrations keep every row, older key shapes are brought to today's, concurrent starts make
one schema, and the table definitions never drift from their migrations' head."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from assets.invoices.erp import erp_schema
from orchestration.core import db, schema_migrations
from orchestration.core.schema_migrations import BOSUN_SCHEMA, SchemaMismatch, SchemaOwner
from resources.fault_injection import journal_schema
from resources.outbox import outbox_schema

MIGRATE_WORKER = Path(__file__).resolve().parents[1] / "fakes" / "migrate_worker.py"
OWNERS = (BOSUN_SCHEMA, erp_schema, outbox_schema, journal_schema)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'bosun.db'}"


def _baseline(owner: SchemaOwner) -> sa.MetaData:
    """The tables as create_all made them before migrations: the baseline's frozen copy."""
    return ScriptDirectory(owner.script_location).get_revision("0001").module.tables()


def _value(column: sa.Column, i: int):
    t = column.type
    if isinstance(t, sa.JSON):
        return {"i": i, "column": column.name}
    if isinstance(t, sa.DateTime):
        return datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc) + timedelta(hours=i)
    if isinstance(t, sa.Date):
        return date(2026, 3, 1) + timedelta(days=i)
    if isinstance(t, sa.Boolean):
        return i % 2 == 0
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        return Decimal(f"{i}1.25")
    if isinstance(t, sa.Float):
        return i + 0.5
    if isinstance(t, sa.Integer):
        return i
    length = getattr(t, "length", None) or 100
    return f"{i}{column.name}"[:length]


def _fill(engine: sa.Engine, md: sa.MetaData, rows_per_table: int = 3) -> None:
    with engine.begin() as conn:
        for table in md.sorted_tables:
            conn.execute(
                table.insert(), [{c.name: _value(c, i) for c in table.columns} for i in range(1, rows_per_table + 1)]
            )


def _rows(engine: sa.Engine, md: sa.MetaData) -> dict[str, list]:
    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all() for t in md.sorted_tables}


def _table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_a_fresh_database_gets_every_schema_at_its_head_each_with_its_own_version_table(url):
    engine = db.unmigrated_engine(url)
    for owner in OWNERS:
        assert schema_migrations.upgrade(engine, owner) == ((), (schema_migrations.head(owner),))
    for owner in OWNERS:
        assert schema_migrations.current(engine, owner) == (schema_migrations.head(owner),)
        # The head builds exactly the application's tables (on this dialect too).
        assert schema_migrations.differences(owner, engine) == [], owner.name
    names = _table_names(engine)
    assert {o.version_table for o in OWNERS} <= names
    assert {t for o in OWNERS for md in o.metadata() for t in md.tables} <= names
    # A second start finds every schema at its head and changes nothing.
    head = (schema_migrations.head(BOSUN_SCHEMA),)
    assert schema_migrations.upgrade(engine, BOSUN_SCHEMA) == (head, head)


def test_a_database_made_by_create_all_before_migrations_keeps_every_row(url):
    """Today's create_all, every table of every owner filled, then the upgrade a process runs
    on start: stamped at the head, every row as it was, the application writes again."""
    engine = db.unmigrated_engine(url)
    before = {}
    for owner in (BOSUN_SCHEMA, erp_schema, outbox_schema):
        md = _baseline(owner)
        md.create_all(engine)
        _fill(engine, md)
        before[owner.name] = _rows(engine, md)
    assert not any(o.version_table in _table_names(engine) for o in OWNERS)

    engine = db.engine_for(url, (BOSUN_SCHEMA, erp_schema, outbox_schema))

    for owner in (BOSUN_SCHEMA, erp_schema, outbox_schema):
        assert schema_migrations.current(engine, owner) == (schema_migrations.head(owner),)
        after = _rows(engine, _baseline(owner))
        assert after == before[owner.name], owner.name
        assert all(len(rows) == 3 for rows in after.values())
        assert schema_migrations.differences(owner, engine) == [], owner.name
    from orchestration.review.queue import ReviewQueue

    assert ReviewQueue(url).count("pending") == 0  # the application reads and writes as before


def test_content_seen_keyed_by_content_becomes_keyed_by_event_with_its_rows(url):
    """bosun_content_seen as hostile delivery first made it (d323c16: one row per type and
    content), rows in it: after the upgrade each row is still there and the table takes a
    second event with the same content, as today's de-duplication needs."""
    engine = db.unmigrated_engine(url)
    md = _baseline(BOSUN_SCHEMA)
    md.remove(md.tables["bosun_content_seen"])
    md.create_all(engine)
    old = sa.Table(
        "bosun_content_seen",
        sa.MetaData(),
        sa.Column("type", sa.String(200), primary_key=True),
        sa.Column("content_hash", sa.String(64), primary_key=True),
        sa.Column("first_key", sa.String(450), nullable=False),
        sa.Column("first_occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    old.create(engine)
    at = datetime(2026, 11, 24, 19, 0, tzinfo=timezone.utc)
    rows = [
        {
            "type": "invoice.received",
            "content_hash": f"h{i}",
            "first_key": f"portal:{i}",
            "first_occurred_at": at + timedelta(minutes=i),
        }
        for i in range(5)
    ]
    with engine.begin() as conn:
        conn.execute(old.insert(), rows)

    engine = db.engine_for(url)

    assert sa.inspect(engine).get_pk_constraint("bosun_content_seen")["constrained_columns"] == [
        "type",
        "content_hash",
        "first_key",
    ]
    with engine.begin() as conn:
        kept = conn.execute(sa.select(db.content_seen).order_by(db.content_seen.c.content_hash)).mappings().all()
        assert [(r["type"], r["content_hash"], r["first_key"]) for r in kept] == [
            (r["type"], r["content_hash"], r["first_key"]) for r in rows
        ]
        assert [r["first_occurred_at"].replace(tzinfo=timezone.utc) for r in kept] == [
            r["first_occurred_at"] for r in rows
        ]
        conn.execute(
            db.content_seen.insert(),
            {"type": "invoice.received", "content_hash": "h0", "first_key": "email:9", "first_occurred_at": at},
        )
    assert schema_migrations.differences(BOSUN_SCHEMA, engine) == []


def test_per_workflow_leases_become_per_entity_with_their_rows(url):
    """bosun_leases keyed by name with a datetime expiry (bd34b4d, before the per-entity
    leases): its rows move over with the expiry in epoch seconds."""
    engine = db.unmigrated_engine(url)
    md = _baseline(BOSUN_SCHEMA)
    md.remove(md.tables["bosun_leases"])
    md.create_all(engine)
    old = sa.Table(
        "bosun_leases",
        sa.MetaData(),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    old.create(engine)
    expires = datetime(2026, 11, 24, 19, 30, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            old.insert(),
            [
                {"name": "invoices", "holder": "run-1", "expires_at": expires},
                {"name": "tickets", "holder": None, "expires_at": expires},
            ],
        )

    engine = db.engine_for(url)

    from orchestration.action.saga_log import leases

    with engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.select(leases).order_by(leases.c.entity_key))] == [
            ("invoices", "run-1", expires.timestamp()),
            ("tickets", "", expires.timestamp()),
        ]
    assert schema_migrations.differences(BOSUN_SCHEMA, engine) == []


def test_an_unknown_difference_stops_the_upgrade_and_changes_nothing(url):
    """A table missing a NOT NULL column no revision knows of: the upgrade names it and
    leaves the database as it found it (no table created, no version stamped)."""
    engine = db.unmigrated_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bosun_triage_lock (name VARCHAR(100) PRIMARY KEY)"))
    with pytest.raises(SchemaMismatch, match="bosun_triage_lock has no column n"):
        schema_migrations.upgrade(engine, BOSUN_SCHEMA)
    assert _table_names(engine) == {"bosun_triage_lock"}
    assert schema_migrations.current(engine, BOSUN_SCHEMA) == ()


def test_two_processes_starting_at_once_make_one_schema(url):
    procs = [
        subprocess.Popen(
            [sys.executable, str(MIGRATE_WORKER), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["READY", "READY"]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        outcomes = sorted((json.loads(p.stdout.read()) for p in procs), key=lambda o: o["before"])
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
    # One of them migrated, the other waited and found the head.
    head = schema_migrations.head(BOSUN_SCHEMA)
    assert outcomes == [{"before": [], "after": [head]}, {"before": [head], "after": [head]}]
    engine = db.unmigrated_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM bosun_alembic_version")).scalars().all() == [head]
    assert schema_migrations.differences(BOSUN_SCHEMA, engine) == []


@pytest.mark.parametrize("owner", OWNERS, ids=lambda o: o.name)
def test_table_definitions_agree_with_their_migrations_head(owner):
    """Fails when a table or column was added, changed or dropped without a revision:
    run `bosun db revision --schema NAME -m '...'` (orchestration/README.md)."""
    assert schema_migrations.differences(owner) == []


def test_a_new_revision_is_written_from_the_changed_definitions_and_applies(tmp_path):
    """What a developer does after adding a column: `bosun db revision` writes 0002 with
    the change, and a database at 0001 with rows reaches 0002 keeping them."""
    location = tmp_path / "trial"
    # The baseline alone: the trial's tables are the baseline's, plus the new column.
    later = [
        p.name
        for p in (Path(BOSUN_SCHEMA.script_location) / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
        if not p.name.startswith("0001_")
    ]
    shutil.copytree(BOSUN_SCHEMA.script_location, location, ignore=shutil.ignore_patterns("__pycache__", *later))
    changed = _baseline(BOSUN_SCHEMA)
    changed.tables["bosun_inbox"].append_column(sa.Column("priority", sa.Integer))
    trial = SchemaOwner("trial", str(location), lambda: (changed,), table_prefixes=("bosun_",))

    url = f"sqlite:///{tmp_path / 'trial.db'}"
    engine = db.unmigrated_engine(url)
    schema_migrations.upgrade(engine, trial)
    _fill(engine, _baseline(BOSUN_SCHEMA))
    before = _rows(engine, _baseline(BOSUN_SCHEMA))

    path = schema_migrations.new_revision(trial, "inbox: add priority")

    assert path.name == "0002_inbox_add_priority.py"
    text = path.read_text()
    assert "down_revision: Union[str, Sequence[str], None] = '0001'" in text
    assert "add_column(sa.Column('priority', sa.Integer(), nullable=True))" in text
    assert schema_migrations.upgrade(engine, trial) == (("0001",), ("0002",))
    assert "priority" in {c["name"] for c in sa.inspect(engine).get_columns("bosun_inbox")}
    assert _rows(engine, _baseline(BOSUN_SCHEMA)) == before
    assert schema_migrations.differences(trial, engine) == []


def test_bosun_db_upgrade_current_and_sql(bosun_home, capsys):
    from orchestration.cli import main

    assert main(["db", "current", "--json"]) == 0
    assert {r["schema"]: r["current"] for r in json.loads(capsys.readouterr().out)} == {
        "bosun": None,
        "erp": None,
        "outbox": None,
    }
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert all(f"-> {schema_migrations.head(o)}" in out for o in (BOSUN_SCHEMA,)) and out.count("-> ") == 3
    assert main(["db", "current", "--json"]) == 0
    assert all(r["up_to_date"] for r in json.loads(capsys.readouterr().out))
    assert main(["db", "upgrade", "--sql", "--schema", "erp"]) == 0
    sql = capsys.readouterr().out
    assert "CREATE TABLE erp_payments" in sql and "INSERT INTO erp_alembic_version" in sql
    assert main(["db", "check"]) == 0


def test_a_metadata_stands_for_its_owner_and_tables_no_owner_migrates_are_refused():
    """`engine_for(url, (some_metadata,))`, as code from before migrations calls it, migrates
    the owner of those tables; tables in no owner would never be created, so it says so."""
    from assets.invoices.erp import erp_metadata
    from orchestration.action.saga_log import saga_metadata

    assert schema_migrations.owners_for(()) == (BOSUN_SCHEMA,)
    assert schema_migrations.owners_for((saga_metadata,)) == (BOSUN_SCHEMA,)
    assert schema_migrations.owners_for((erp_metadata, BOSUN_SCHEMA)) == (erp_schema, BOSUN_SCHEMA)
    stray = sa.MetaData()
    sa.Table("bosun_new_thing", stray, sa.Column("id", sa.Integer, primary_key=True))
    with pytest.raises(LookupError, match="bosun_new_thing"):
        schema_migrations.owners_for((stray,))
