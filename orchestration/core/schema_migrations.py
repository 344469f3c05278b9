"""Schema migrations (Alembic) for every table Bosun and its targets own.

A `SchemaOwner` is one set of tables with its own Alembic script directory (package data
beside the code that owns the tables) and its own version table (`bosun_alembic_version`,
`erp_alembic_version`, ...), so one database can hold several owners and each moves on
its own. `db.engine_for` brings an owner to its head once per process, which is how
migrations run on start; `upgrade` is serialised across processes by a Postgres advisory
lock held by the migrating transaction, or a lock file beside a SQLite database.

Each owner's first revision (`0001`) is a baseline: it creates today's tables, and on a
database made by `create_all` before migrations existed (no version table) it keeps the
tables there, brings known older shapes to today's and fails, naming the table, on any
other difference, rather than stamping a schema that is not there.

`bosun db upgrade / current / revision / check` (cli_db.py) are the commands over this.
Alembic is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import sqlalchemy as sa

log = logging.getLogger(__name__)

# The key of the advisory lock every migrating process takes on Postgres (one per database,
# whatever the owner: one migration at a time is simplest and costs nothing). The same key
# create_all used, so a process still running older code waits too.
PG_LOCK_KEY = 7301849

_owners: dict[str, "SchemaOwner"] = {}
_scripts: dict[str, object] = {}
_scripts_lock = threading.Lock()


class SchemaMismatch(RuntimeError):
    """A database's existing tables differ from what a baseline expects."""


@dataclass(frozen=True)
class SchemaOwner:
    """One owner's tables: its migrations and its version table, in whatever database it lives."""

    name: str  # "bosun", "erp": also names the version table
    script_location: str  # Alembic script directory: env.py, script.py.mako, versions/
    # The application's table definitions (autogenerate and `check` compare them with the
    # head); a function, because the modules defining them import the database layer.
    metadata: Callable[[], tuple[sa.MetaData, ...]] = field(compare=False)
    # Tables named so belong to this owner even when no metadata has them any more
    # (a dropped table is noticed); tables of other owners in the same database are not.
    table_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _owners[self.name] = self

    @property
    def version_table(self) -> str:
        return f"{self.name}_alembic_version"

    def owns_table(self, name: str) -> bool:
        if name == self.version_table:
            return False
        return name.startswith(self.table_prefixes) or any(name in md.tables for md in self.metadata())


def _bosun_metadata() -> tuple[sa.MetaData, ...]:
    from orchestration.action import circuit_breaker, saga_log
    from orchestration.core import db
    from orchestration.decision import llm_ledger
    from orchestration.verification import metrics

    return (
        db.metadata,
        llm_ledger.ledger_metadata,
        circuit_breaker.breaker_metadata,
        metrics.metrics_metadata,
        saga_log.saga_metadata,
    )


# Every engine table: inbox, delivery, dead letters, review, feedback, audit, API keys (db.py),
# the saga log, leases and rate buckets, the LLM ledger, circuit breakers, batch metrics.
BOSUN_SCHEMA = SchemaOwner(
    "bosun", str(Path(__file__).parent / "migrations" / "bosun"), _bosun_metadata, table_prefixes=("bosun_",)
)


def registered() -> dict[str, SchemaOwner]:
    """Every owner whose module has been imported, by name."""
    return dict(_owners)


def owners_for(items: Iterable) -> tuple[SchemaOwner, ...]:
    """The owners `engine_for` must bring up to date: SchemaOwners as given, and a MetaData
    (the spelling before migrations) by the owner whose metadata includes it."""
    owners: list[SchemaOwner] = []
    for item in items:
        if isinstance(item, sa.MetaData):
            owner = next((o for o in _owners.values() if any(md is item for md in o.metadata())), None)
            if owner is None:
                raise LookupError(
                    f"tables {sorted(item.tables)} belong to no schema owner, so no migration creates them: add "
                    "their MetaData to an owner's `metadata` and write a revision (`bosun db revision`)"
                )
            item = owner
        if item not in owners:
            owners.append(item)
    return tuple(owners) or (BOSUN_SCHEMA,)


# ---- Alembic plumbing ----------------------------------------------------------------------


def _config(owner: SchemaOwner, *, connection=None, url: str | None = None, output=None):
    from alembic.config import Config

    cfg = Config(output_buffer=output, stdout=output or io.StringIO())
    cfg.set_main_option("script_location", owner.script_location.replace("%", "%%"))
    cfg.attributes.update(owner=owner, connection=connection, url=url)
    return cfg


def _script(owner: SchemaOwner):
    """The owner's script directory, read once per process (revision files are parsed once)."""
    from alembic.script import ScriptDirectory

    with _scripts_lock:
        if owner.name not in _scripts:
            _scripts[owner.name] = ScriptDirectory(owner.script_location)
        return _scripts[owner.name]


def head(owner: SchemaOwner) -> str:
    """The owner's latest revision; raises when two revisions claim the same parent (two
    branches each added one: give the later one the other as `down_revision`)."""
    return _script(owner).get_current_head()


def run_environment() -> None:
    """The body of every owner's env.py: online on the connection the caller hands in (this
    module's functions), offline (`--sql`) for the URL's dialect."""
    from alembic import context

    cfg = context.config
    owner: SchemaOwner = cfg.attributes["owner"]
    options = dict(
        target_metadata=list(owner.metadata()),
        version_table=owner.version_table,
        include_name=lambda name, type_, parents: type_ != "table" or owner.owns_table(name),
        compare_type=True,
        # Autogenerated revisions use batch blocks: SQLite alters a table by copying it, and on
        # Postgres the same block is plain ALTER statements.
        render_as_batch=True,
    )
    if context.is_offline_mode():
        context.configure(
            url=cfg.attributes["url"], literal_binds=True, dialect_opts={"paramstyle": "named"}, **options
        )
    else:
        connection = cfg.attributes.get("connection")
        if connection is None:
            raise RuntimeError(
                "run migrations through `bosun db` (orchestration/core/schema_migrations.py), "
                "which hands the environment its connection"
            )
        context.configure(connection=connection, **options)
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: sa.Connection, owner: SchemaOwner, destination: str) -> None:
    """Run `owner`'s revisions up to `destination` on this connection, inside its transaction.

    Not through `command.upgrade` and the owner's env.py: that installs Alembic's `context`, a
    module-global proxy, and Dagster stamps its own storage through the same proxy whenever an
    instance is made (`DagsterInstance.ephemeral`, dagster-postgres); two at once in one process
    remove each other's attributes (KeyError 'config' / 'script'). A `MigrationContext` with the
    work function `command.upgrade` would pass needs only the `op` proxy (`Operations.context`),
    which nothing but Bosun's migrations uses, one at a time per process."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    script = _script(owner)
    migration = MigrationContext.configure(
        connection,
        opts={
            "target_metadata": list(owner.metadata()),
            "version_table": owner.version_table,
            "script": script,
            # What command.upgrade hands env.py: the revisions from the current heads up.
            "fn": lambda heads, _context: script._upgrade_revs(destination, heads),
        },
    )
    with _ALEMBIC_IN_PROCESS, Operations.context(migration):
        migration.run_migrations()


def _current(connection: sa.Connection, owner: SchemaOwner) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": owner.version_table}).get_current_heads()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that no other process migrates beside."""
    if engine.dialect.name == "postgresql":
        # Postgres DDL is transactional: the lock, the DDL and the version row commit together.
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            yield conn
        return
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn, conn.begin():
            yield conn
        return
    path = engine.url.database
    with contextlib.ExitStack() as stack:
        if path and path != ":memory:" and not path.startswith("file:"):
            # A lock file beside the database, held for as long as a migration takes (SQLite's
            # own lock waits only its busy timeout); never the database file itself: closing
            # another descriptor of it would drop SQLite's POSIX locks in this process.
            import fcntl

            fh = stack.enter_context(open(f"{path}-migrations.lock", "a"))
            fcntl.flock(fh, fcntl.LOCK_EX)
            stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
        conn = stack.enter_context(engine.connect())
        stack.enter_context(conn.begin())
        # The driver opens no transaction before DDL: open one, so the migration and its
        # version row commit together (a crash leaves the old schema) and in one disk sync.
        # The connection's commit or rollback ends it.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


# Held while Bosun's migrations run in this process: they share Alembic's `op` proxy.
_ALEMBIC_IN_PROCESS = threading.RLock()


def upgrade(
    engine: sa.Engine, owner: SchemaOwner, destination: str = "head"
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Bring `owner`'s tables in `engine`'s database to `destination`; (before, after)."""
    with _migration_lock(engine) as conn:
        before = _current(conn, owner)
        target = head(owner) if destination == "head" else destination
        if before == (target,):
            return before, before
        _migrate(conn, owner, destination)
        after = _current(conn, owner)
    from orchestration.core.settings import redact_url

    log.info(
        "schema %s: %s -> %s on %s",
        owner.name,
        ",".join(before) or "none",
        ",".join(after),
        redact_url(engine.url.render_as_string(hide_password=False)),
    )
    return before, after


def current(engine: sa.Engine, owner: SchemaOwner) -> tuple[str, ...]:
    """The owner's revision in that database (empty: never migrated)."""
    with engine.connect() as conn:
        return _current(conn, owner)


def upgrade_sql(owner: SchemaOwner, url: str, out) -> None:
    """The SQL `upgrade` would run on an empty database of `url`'s dialect, written to `out`
    (for a DBA who applies it by hand; nothing connects)."""
    from alembic import command

    command.upgrade(_config(owner, url=url, output=out), "head", sql=True)


@contextlib.contextmanager
def _scratch_at_head(owner: SchemaOwner) -> Iterator[sa.Engine]:
    with tempfile.TemporaryDirectory(prefix=f"bosun-{owner.name}-schema-") as tmp:
        engine = sa.create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        try:
            upgrade(engine, owner)
            yield engine
        finally:
            engine.dispose()


def differences(owner: SchemaOwner, engine: sa.Engine | None = None) -> list:
    """What autogenerate would put in a new revision: the application's tables against the
    head's (a scratch SQLite database unless `engine` is given). Empty when they agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    def compare(eng: sa.Engine) -> list:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": owner.version_table,
                    "compare_type": True,
                    "include_name": lambda name, type_, parents: type_ != "table" or owner.owns_table(name),
                },
            )
            return compare_metadata(ctx, list(owner.metadata()))

    if engine is not None:
        return compare(engine)
    with _scratch_at_head(owner) as scratch:
        return compare(scratch)


def new_revision(owner: SchemaOwner, message: str, autogenerate: bool = True) -> Path:
    """Write the owner's next revision file (`NNNN_message.py` in its versions/), by default
    with the operations that bring the head to the application's tables (compared on a
    scratch SQLite database, so no server is needed). Read it before committing."""
    from alembic import command

    script = _script(owner)
    numbers = [int(rev.revision) for rev in script.walk_revisions() if rev.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    with _scratch_at_head(owner) as scratch, scratch.connect() as conn:
        made = command.revision(
            _config(owner, connection=conn), message=message, autogenerate=autogenerate, rev_id=rev_id
        )
    with _scripts_lock:
        _scripts.pop(owner.name, None)  # the next read sees the new file
    return Path(made.path)


# ---- helpers for baseline revisions --------------------------------------------------------


def create_or_adopt(frozen: sa.MetaData) -> None:
    """A baseline's upgrade: create each table of `frozen` (the schema when migrations began)
    that is missing, and adopt the ones `create_all` made before: their missing indexes and
    nullable columns are added; any other difference raises `SchemaMismatch`, so a database
    is never stamped with a schema it does not have. Offline (`--sql`): CREATE everything."""
    from alembic import op
    from sqlalchemy.schema import CreateIndex, CreateTable

    existing = set() if op.get_context().as_sql else set(sa.inspect(op.get_bind()).get_table_names())
    problems: list[str] = []
    for table in frozen.sorted_tables:
        if table.name not in existing:
            op.execute(CreateTable(table))
            for index in sorted(table.indexes, key=lambda ix: ix.name):
                op.execute(CreateIndex(index))
        else:
            problems += _adopt(table)
    if problems:
        raise SchemaMismatch(
            "existing tables differ from the baseline (fix them by hand, then start again): " + "; ".join(problems)
        )


def _adopt(table: sa.Table) -> list[str]:
    from alembic import op
    from sqlalchemy.schema import CreateIndex

    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns(table.name)}
    problems = []
    for column in table.columns:
        if column.name in columns:
            continue
        if column.nullable or column.server_default is not None:
            op.add_column(
                table.name,
                sa.Column(column.name, column.type, nullable=column.nullable, server_default=column.server_default),
            )
        else:
            problems.append(f"{table.name} has no column {column.name} (NOT NULL, no default)")
    key = inspector.get_pk_constraint(table.name).get("constrained_columns") or []
    if sorted(key) != sorted(c.name for c in table.primary_key.columns):
        problems.append(
            f"{table.name}'s primary key is {key}, the baseline's {[c.name for c in table.primary_key.columns]}"
        )
    indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            op.execute(CreateIndex(index))
    return problems
