"""A named lease in Bosun's database: mutual exclusion across run processes.

Concurrent batch runs of one workflow may each decide to act on the same entity (an
invoice paid from two batches). Their action phases take the workflow's lease, so the
final re-check against the target system and the writes happen one batch at a time;
the costly parts (context, decisions) still run in parallel. A lease is an UPDATE of one
row that commits at once (no transaction is held open, which SQLite could not share with
the target system's writes), and it expires, so a crashed holder cannot block forever.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import sqlalchemy as sa

from orchestration.db import dialect_insert, engine_for, leases


class LeaseTimeout(TimeoutError):
    pass


class Leases:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    @contextmanager
    def hold(self, name: str, holder: str, ttl_s: float = 300.0, wait_s: float = 600.0,
             poll_s: float = 0.05) -> Iterator[None]:
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(conn.engine, leases).on_conflict_do_nothing(),
                         {"name": name, "holder": None, "expires_at": datetime(1970, 1, 1, tzinfo=timezone.utc)})
        deadline = time.monotonic() + wait_s
        while True:
            now = datetime.now(timezone.utc)
            with self.engine.begin() as conn:
                got = conn.execute(leases.update().where(
                    leases.c.name == name, sa.or_(leases.c.holder.is_(None), leases.c.holder == holder,
                                                  leases.c.expires_at < now))
                    .values(holder=holder, expires_at=now + timedelta(seconds=ttl_s))).rowcount
            if got:
                break
            if time.monotonic() > deadline:
                raise LeaseTimeout(f"lease {name!r} still held after {wait_s:g} s")
            time.sleep(poll_s)
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(leases.update().where(leases.c.name == name, leases.c.holder == holder)
                             .values(holder=None))
