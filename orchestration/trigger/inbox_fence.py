"""The inbox's commit fence: a batch cursor never moves past a sequence number a writer may still commit.

Postgres hands out `seq` when a row is inserted, not when it commits: writer A can hold seq 2
uncommitted while writer B commits seq 3. A reader that cut 1-3 and moved its cursor to 3
would never read seq 2 again. So, on Postgres:

- every transaction that inserts into the inbox first takes a *shared* advisory lock
  (`hold_for_insert`), released when the transaction ends: writers never wait for each other;
- a reader takes the same lock *exclusively* (`committed_watermark`), which waits until every
  writer in flight has ended, reads max(seq) in a snapshot taken after that, and lets go at once.

Why that is enough: when the reader holds the lock, every seq handed out so far belongs to a
transaction that has ended, so it is final: committed (and visible to the max) or rolled back
(and gone for good). Any seq handed out later is larger, because the sequence only grows and
a SERIAL / BIGSERIAL sequence has CACHE 1 (no session holds a block of smaller numbers). So
every event with seq <= the watermark is already visible, and reading up to it never skips
one; the lock need not be held while reading. The price: writers queue behind a reader for the
few microseconds of one max(seq), and a reader waits for the writers in flight (one bulk insert
each), at most `wait_s`.

The rule every writer must keep: call `hold_for_insert(conn)` in the transaction before its first
insert into `bosun_inbox` (`Inbox.writing()` does). A row written without it can still be
skipped by the cursor; the sweeper (`Inbox.unbatched_below`) then picks it up late.

SQLite needs none of this: one writer at a time holds the database's write lock from its first
insert to its commit, so commit order is seq order and every snapshot is a prefix.
"""

from __future__ import annotations

import sqlalchemy as sa

# One lock per database (advisory locks are per database): b"bosuninb" as a signed 64-bit key.
INBOX_WRITE_FENCE = int.from_bytes(b"bosuninb", "big")
_LOCK_NOT_AVAILABLE = "55P03"


class WritersInFlight(RuntimeError):
    """The fence could not be crossed within the wait: a writer held its transaction open."""


def hold_for_insert(conn: sa.Connection) -> None:
    """Inside a writer's transaction, before its first insert into the inbox."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(INBOX_WRITE_FENCE)))


def committed_watermark(engine: sa.Engine, wait_s: float = 10.0) -> int | None:
    """The highest seq at or below which no transaction can still commit an event; None where
    every committed prefix is already safe to read (SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    from orchestration.core.db import inbox

    # READ COMMITTED whatever the engine's default: the max must be read in a snapshot taken
    # after the lock was granted, which is why it is a statement of its own.
    with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn, conn.begin():
        conn.execute(sa.text(f"SET LOCAL lock_timeout = '{max(int(wait_s * 1000), 1)}ms'"))
        try:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(INBOX_WRITE_FENCE)))
        except sa.exc.OperationalError as err:
            if getattr(err.orig, "pgcode", None) == _LOCK_NOT_AVAILABLE:
                raise WritersInFlight(
                    f"an inbox writer kept its transaction open for more than {wait_s:g} s; "
                    "events past the cursor wait for the next tick"
                ) from None
            raise
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(inbox.c.seq), 0))).scalar_one())
