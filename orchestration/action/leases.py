"""A lease per entity in the database: two runs never act on one entity (a document and the record it draws on, say) at once.

Taking leases is one multi-row INSERT that skips held keys plus one UPDATE that takes
over expired ones; a holder that crashed loses its leases when they expire. A live holder
keeps them with a heartbeat (`kept_alive`), however long one step takes, and checks it
still holds them before each step (`renew` returns what it holds: a fence).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import sqlalchemy as sa

from orchestration.action.saga_log import leases, saga_engine
from orchestration.core.db import insert_ignoring_duplicates


class Leases:
    def __init__(self, url: str, holder: str, ttl_s: float = 300.0):
        self.engine, self.holder, self.ttl_s = saga_engine(url), holder, ttl_s

    def try_acquire(self, keys: list[str]) -> set[str]:
        """Take every free or expired lease among `keys`; returns the keys this holder holds."""
        keys = sorted(set(keys))
        if not keys:
            return set()
        now = time.time()
        with self.engine.begin() as conn:
            for i in range(0, len(keys), 5000):
                chunk = keys[i : i + 5000]
                conn.execute(
                    leases.update()
                    .where(leases.c.entity_key.in_(chunk), leases.c.expires_at < now)
                    .values(holder=self.holder, expires_at=now + self.ttl_s)
                )
                conn.execute(
                    insert_ignoring_duplicates(self.engine, leases, ["entity_key"]),
                    [{"entity_key": k, "holder": self.holder, "expires_at": now + self.ttl_s} for k in chunk],
                )
        return self.held(keys)

    def held(self, keys: list[str]) -> set[str]:
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 5000):
                q = sa.select(leases.c.entity_key).where(
                    leases.c.entity_key.in_(keys[i : i + 5000]), leases.c.holder == self.holder
                )
                out |= {k for (k,) in conn.execute(q)}
        return out

    def acquire(self, keys: list[str], wait_s: float = 0.0, poll_s: float = 0.05) -> set[str]:
        """Take what is free, waiting up to `wait_s` for the rest; the caller defers what it lacks."""
        wanted, deadline = set(keys), time.monotonic() + wait_s
        held = self.try_acquire(list(wanted))
        while held != wanted and time.monotonic() < deadline:
            time.sleep(poll_s)
            held |= self.try_acquire(list(wanted - held))
        return held

    def renew(self) -> set[str]:
        """Extend every lease this holder has; returns the keys it still holds (one that
        lapsed while this process stalled may have gone to another holder)."""
        with self.engine.begin() as conn:
            conn.execute(
                leases.update().where(leases.c.holder == self.holder).values(expires_at=time.time() + self.ttl_s)
            )
            return {k for (k,) in conn.execute(sa.select(leases.c.entity_key).where(leases.c.holder == self.holder))}

    @contextlib.contextmanager
    def kept_alive(self):
        """Renew every third of the TTL from a background thread while the body runs: a step
        slower than the TTL keeps its leases, and a process that dies stops renewing, so its
        leases still lapse. A missed beat is logged; the fence before each step catches a loss."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except Exception as exc:  # a database blip: the next beat tries again
                    logging.getLogger(__name__).warning("lease heartbeat of %s failed: %s", self.holder, exc)

        thread = threading.Thread(target=beat, name=f"lease-heartbeat-{self.holder}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def release(self, keys: list[str] | None = None) -> None:
        with self.engine.begin() as conn:
            q = leases.delete().where(leases.c.holder == self.holder)
            if keys is not None:
                q = q.where(leases.c.entity_key.in_(sorted(set(keys))))
            conn.execute(q)
