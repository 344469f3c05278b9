"""A token bucket per target system, shared by every run and process through the database.

Kept as GCRA (its "theoretical arrival time"): one row per target holds the earliest
time the next call may start. Reserving a call is one atomic UPDATE ... RETURNING, so
concurrent runs on SQLite or Postgres serialise on the row and never share a slot.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import sqlalchemy as sa

from orchestration.action.saga_log import rate_buckets, saga_engine
from orchestration.core import clock
from orchestration.core.db import insert_ignoring_duplicates


class RateLimiter:
    """`rate` calls per second to `target`, with a burst of `burst` calls.

    Calls are spaced 1/(rate * (1 - headroom)) apart: the target measures arrivals, and
    a call reserved later can arrive a few milliseconds earlier than one before it
    (scheduling jitter), so the spacing leaves room for that instead of counting on luck.
    """

    def __init__(self, url: str, target: str, rate: float, burst: int = 1, headroom: float = 0.05):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.engine, self.target = saga_engine(url), target
        self.interval = 1.0 / (rate * (1.0 - headroom))
        self.burst = max(1, burst)
        with self.engine.begin() as conn:
            conn.execute(
                insert_ignoring_duplicates(self.engine, rate_buckets, ["target"]), [{"target": target, "next_at": 0.0}]
            )

    def reserve(self) -> float:
        """Reserve the next slot; returns the wall-clock time at which the call may start."""
        now = time.time()
        new = sa.case((rate_buckets.c.next_at > now, rate_buckets.c.next_at), else_=now) + self.interval
        stmt = (
            rate_buckets.update()
            .where(rate_buckets.c.target == self.target)
            .values(next_at=new)
            .returning(rate_buckets.c.next_at)
        )
        with self.engine.begin() as conn:
            next_at = float(conn.execute(stmt).scalar_one())
        # A full bucket lets `burst` calls through back to back.
        return max(now, next_at - self.burst * self.interval)

    def try_acquire(self) -> float:
        """Take a slot now if the bucket has one: 0.0, else the seconds until it will (and
        nothing taken). One conditional UPDATE, so every process sharing the database
        shares the allowance. For callers that answer "later" instead of waiting (the API)."""
        now = clock.timestamp()
        tat = sa.case((rate_buckets.c.next_at > now, rate_buckets.c.next_at), else_=now)
        burst_span = self.burst * self.interval
        with self.engine.begin() as conn:
            taken = conn.execute(
                rate_buckets.update()
                .where(rate_buckets.c.target == self.target, tat + self.interval - burst_span <= now)
                .values(next_at=tat + self.interval)
            ).rowcount
            if taken:
                return 0.0
            next_at = float(
                conn.execute(sa.select(rate_buckets.c.next_at).where(rate_buckets.c.target == self.target)).scalar_one()
            )
        return max(1e-3, max(next_at, now) + self.interval - burst_span - now)

    def acquire(self) -> float:
        """Block until a call may start; returns the seconds waited."""
        start = self.reserve()
        wait = start - time.time()
        if wait > 0:
            time.sleep(wait)
        return max(0.0, wait)


def rate_from_env(var: str) -> float | None:
    """Calls per second from the environment variable `var` (a target's declared limit);
    None, no limit, when it is unset or empty."""
    raw = os.environ.get(var)
    return float(raw) if raw else None


def overriding(url: str, target: str, rate: float | None, targets: Sequence[str]) -> dict[str, RateLimiter | None]:
    """An executor's `limiters` when its caller overrides `target`'s rate (a test, a benchmark):
    None keeps the rates the plan's actions declare, 0 lifts the limit of every one of
    `targets` (a None limiter is no limit), any other rate replaces `target`'s."""
    if rate == 0:
        return {t: None for t in targets}
    return {target: RateLimiter(url, target, rate)} if rate else {}
