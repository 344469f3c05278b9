"""One clock for everything in Bosun that asks what time it is.

Logic never calls `datetime.now()` or `time.time()` for a business decision (a due date,
a retention cutoff, a freshness verdict, a sample's dates): it calls `clock.now()`, or takes
`now` as a parameter whose default is this clock. Tests freeze or shift it:

- `with clock.frozen(at): ...` (or `clock.use(some_callable)`) for code in this process;
- `time-machine` moves `datetime.now()` underneath, and this clock with it;
- `BOSUN_CLOCK_SHIFT_DAYS` (environment) shifts the clock of every process that reads it,
  so a subprocess started by a test (a CLI call, a run worker) agrees with the test. CI runs
  the time-dependent tests a second time with the clock a year ahead this way.

Durations (timeouts, backoff, latency) use `time.monotonic()`, which no clock moves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

SHIFT_ENV = "BOSUN_CLOCK_SHIFT_DAYS"


def _system_now() -> datetime:
    shift = os.environ.get(SHIFT_ENV)
    now = datetime.now(timezone.utc)
    return now + timedelta(days=float(shift)) if shift else now


_source: Callable[[], datetime] = _system_now


def now() -> datetime:
    """The current moment, time-zone aware (UTC)."""
    moment = _source()
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def today() -> date:
    """Today's date in UTC."""
    return now().date()


def timestamp() -> float:
    """`now()` as POSIX seconds, for tables that store epoch floats (leases, buckets)."""
    return now().timestamp()


@contextmanager
def use(source: Callable[[], datetime]) -> Iterator[None]:
    """Read the time from `source` inside the block (this process only)."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


@contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """The clock stands still at `at` inside the block."""
    with use(lambda: at):
        yield
