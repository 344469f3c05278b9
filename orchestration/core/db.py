"""Bosun's own tables (SQLAlchemy Core): inbox, dead letters, review queue, audit log.

The same code runs on the embedded SQLite file and on Postgres. The tables are created and
changed by migrations (orchestration/core/schema_migrations.py), never by create_all: a change
here needs a revision (`bosun db revision -m ...`, orchestration/README.md).
"""

from __future__ import annotations

import threading
from typing import Iterable, Iterator, Sequence

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres wants a BIGINT for a stream.
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)

inbox = sa.Table(
    "bosun_inbox",
    metadata,
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
    # The batch that claimed the event (its run stamps it before reading, Inbox.claim_batch):
    # one batch per event, however batches overlap (a sweep, a backfill, a recovery).
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("duplicate_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", UtcDateTime),
    sa.Index("ix_bosun_inbox_type_seq", "type", "seq"),
    # Events no batch has claimed yet: the backlog past the cursor, batches still queued, and
    # stragglers below the cursor for the sweeper. Small whatever the inbox's history.
    sa.Index(
        "ix_bosun_inbox_unclaimed",
        "seq",
        postgresql_where=sa.text("status = 'received' AND batch_id IS NULL"),
        sqlite_where=sa.text("status = 'received' AND batch_id IS NULL"),
    ),
)

# One row per event that failed processing after its retry budget, keyed by the event's
# original idempotency key; a re-drive (`bosun dlq retry`) adds a new inbox row
# (`KEY#retryN`) and points `current_key` at it, so the cursor-based sensor sees it as new.
dead_letters = sa.Table(
    "bosun_dead_letters",
    metadata,
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

# Hostile delivery (orchestration/trigger/delivery.py): the events kept per content hash,
# the newest occurred_at processed per entity, stale events whichever the policy, and one
# lock row per workflow that serialises triage of concurrent batches.
content_seen = sa.Table(
    "bosun_content_seen",
    metadata,
    sa.Column("type", sa.String(200), primary_key=True),
    sa.Column("content_hash", sa.String(64), primary_key=True),
    sa.Column("first_key", sa.String(450), primary_key=True),  # each event kept with this content
    sa.Column("first_occurred_at", UtcDateTime, nullable=False),
)

# Events that passed triage once: a replay of their batch (after a crash, or a backfill)
# keeps them again instead of judging them against what their first pass recorded.
triage_passed = sa.Table(
    "bosun_triage_passed",
    metadata,
    sa.Column("idempotency_key", sa.String(450), primary_key=True),
    sa.Column("batch_id", sa.String(64)),
)

entity_clock = sa.Table(
    "bosun_entity_clock",
    metadata,
    sa.Column("type", sa.String(200), primary_key=True),
    sa.Column("entity_key", sa.String(200), primary_key=True),
    sa.Column("last_occurred_at", UtcDateTime, nullable=False),
    sa.Column("last_key", sa.String(450), nullable=False),
)

stale_events = sa.Table(
    "bosun_stale_events",
    metadata,
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

triage_lock = sa.Table(
    "bosun_triage_lock",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)

# API keys: only a SHA-256 of the secret part is stored (the keys are 256-bit random, so a
# slow password hash buys nothing and would cost every request).
api_keys = sa.Table(
    "bosun_api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("scopes", sa.String(500), nullable=False),
    sa.Column("rate_per_s", sa.Float, nullable=False),
    sa.Column("burst", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
)

review_queue = sa.Table(
    "bosun_review_queue",
    metadata,
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

# Reviewers' answers: the right label for an event's decision, by whom and why. The
# feedback asset reads it to refit the calibrator and retrain the local model.
feedback = sa.Table(
    "bosun_feedback",
    metadata,
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

audit_log = sa.Table(
    "bosun_audit_log",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=False),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("subject", sa.String(450), index=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # The audit key the hash is an HMAC under (its id, orchestration/audit/key.py); NULL: a
    # plain SHA-256 record written before the chain was keyed.
    sa.Column("key_id", sa.String(16)),
)

# One row that every appender locks first, so concurrent runs extend one chain.
audit_head = sa.Table(
    "bosun_audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# Retention: the records archived and pruned so far end at a checkpoint, whose seq and hash
# the remaining chain continues from; each checkpoint names its archive file and digest.
audit_checkpoints = sa.Table(
    "bosun_audit_checkpoints",
    metadata,
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

# Values assets pass between runs (orchestration/core/stored_values.py): a context snapshot the
# batch runs fall back to, a model, a calibrator. One row per name and partition, replaced
# on each materialization, so nothing an asset returns is pickled to a worker's local disk.
stored_values = sa.Table(
    "bosun_stored_values",
    metadata,
    sa.Column("name", sa.String(450), primary_key=True),  # the asset key ("a/b") or run/step/output
    sa.Column("partition_key", sa.String(200), primary_key=True),  # "" when unpartitioned
    sa.Column("value", sa.LargeBinary, nullable=False),  # pickle, as Dagster's own IO managers
    sa.Column("run_id", sa.String(64)),
    sa.Column("stored_at", UtcDateTime, nullable=False),
)

_lock = threading.RLock()
_migrated: set[tuple[str, str]] = set()  # (url, schema owner) brought to its head by this process


_engines: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    # One engine (and pool) per URL per process, shared by every resource and run.
    with _lock:
        if url not in _engines:
            _engines[url] = _new_engine(url)
        return _engines[url]


def unmigrated_engine(url: str) -> sa.Engine:
    """The process's engine for `url` as it is, for `bosun db`, which migrates it itself."""
    return _engine(url)


def dispose(url: str) -> None:
    """Close pooled connections to `url` (before dropping a database, say)."""
    with _lock:
        engine = _engines.pop(url, None)
        _migrated.difference_update({k for k in _migrated if k[0] == url})
    if engine is not None:
        engine.dispose()


def _new_engine(url: str) -> sa.Engine:
    kwargs: dict = {"future": True}
    if url.startswith("sqlite"):
        # Several processes (webserver, daemon, run workers) share the file: wait for the
        # writer instead of failing with "database is locked".
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def engine_for(url: str, schemas: tuple = (), extra_metadata: tuple = ()) -> sa.Engine:
    """The engine for `url`, with the tables of `schemas` (SchemaOwners; Bosun's own when none
    is given) migrated to their head once per process: migrations run on start, serialised
    across processes (orchestration/core/schema_migrations.py). A MetaData stands for the owner
    whose tables it holds; `extra_metadata` is the spelling from before migrations."""
    from orchestration.core import schema_migrations

    engine = _engine(url)
    owners = schema_migrations.owners_for((*schemas, *extra_metadata))
    with _lock:
        for owner in owners:
            if (url, owner.name) not in _migrated:
                schema_migrations.upgrade(engine, owner)
                _migrated.add((url, owner.name))
    return engine


def dialect_insert(engine: sa.Engine, table: sa.Table):
    """INSERT with ON CONFLICT support, on SQLite and Postgres alike."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_ignoring_duplicates(engine: sa.Engine, table: sa.Table, index_elements: list[str]):
    """An INSERT that skips rows whose key exists, on SQLite and Postgres alike."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)


# Values per IN (...) list: a statement's bind parameters are capped (SQLite 32,766,
# Postgres 65,535), and a batch may name more keys than that.
IN_CHUNK = 5000


def chunks(values: Iterable, size: int = IN_CHUNK) -> Iterator[list]:
    """`values` in lists of at most `size`, in order."""
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


def rows_in(conn: sa.Connection, query: sa.Select, column, values: Sequence) -> Iterator[sa.RowMapping]:
    """The rows of `query` whose `column` is one of `values`, one statement per chunk of
    `values` (the query's own conditions, grouping and order hold within each chunk)."""
    for part in chunks(values):
        yield from conn.execute(query.where(column.in_(part))).mappings()


def frame_in(engine: sa.Engine, table: sa.Table, column, values: Sequence):
    """The rows of `table` whose `column` is one of `values`, as a pandas frame (with the
    table's columns even when none matches)."""
    import pandas as pd  # only the callers that want frames pay for pandas

    with engine.connect() as conn:
        frames = [pd.read_sql(sa.select(table).where(column.in_(part)), conn) for part in chunks(values)] or [
            pd.read_sql(sa.select(table).where(sa.false()), conn)
        ]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
