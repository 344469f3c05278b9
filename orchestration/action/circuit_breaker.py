"""A circuit breaker whose state lives in Bosun's database, so every run (and every
process) sees that a source keeps failing and stops hammering it.

closed -> (threshold consecutive failures) -> open for `cooldown_s` -> half-open: the next
call is a trial; success closes the circuit, failure opens it again.

Shared state is changed by single statements: a failure is counted by one
`UPDATE ... SET consecutive_failures = consecutive_failures + 1` (concurrent failures are
all counted), and in half-open a caller must win `claim_trial` (a conditional UPDATE that
pushes `open_until` out by the trial's time limit) before calling: one trial call, however
many runs found the circuit half-open at once; the others see it open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import UtcDateTime, engine_for, insert_ignoring_duplicates

breaker_metadata = sa.MetaData()

circuit_breakers = sa.Table(
    "bosun_circuit_breakers",
    breaker_metadata,
    sa.Column("source", sa.String(200), primary_key=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("open_until", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("last_success_at", UtcDateTime),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)


def _now() -> datetime:
    return clock.now()


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone=True columns.
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


@dataclass(frozen=True)
class BreakerState:
    source: str
    state: str  # closed | open | half_open
    consecutive_failures: int
    open_until: datetime | None
    last_error: str | None

    def as_dict(self) -> dict:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "open_until": self.open_until.isoformat() if self.open_until else None,
            "last_error": self.last_error,
        }


class CircuitBreaker:
    def __init__(self, url: str, threshold: int = 3, cooldown_s: float = 300.0, trial_timeout_s: float = 60.0):
        """`trial_timeout_s`: how long a half-open trial call may take before another caller
        may try (a trial whose caller died must not keep the circuit open forever)."""
        self.engine = engine_for(url, (breaker_metadata,))
        self.threshold, self.cooldown_s, self.trial_timeout_s = threshold, cooldown_s, trial_timeout_s

    def state(self, source: str, now: datetime | None = None) -> BreakerState:
        now = now or _now()
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(circuit_breakers).where(circuit_breakers.c.source == source)).mappings().first()
            )
        if row is None:
            return BreakerState(source, "closed", 0, None, None)
        open_until = _aware(row["open_until"])
        if open_until is None:
            state = "closed"
        else:
            state = "open" if now < open_until else "half_open"
        return BreakerState(source, state, int(row["consecutive_failures"]), open_until, row["last_error"])

    def allows(self, source: str, now: datetime | None = None) -> bool:
        return self.state(source, now).state != "open"

    def record_success(self, source: str) -> None:
        now = _now()
        self._upsert(source, {"consecutive_failures": 0, "open_until": None, "last_success_at": now, "updated_at": now})

    def claim_trial(self, source: str, now: datetime | None = None) -> bool:
        """In half-open, take the one trial call: True for exactly one caller, which must
        then record its success or failure; False (treat the circuit as open) for the rest."""
        now = now or _now()
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    circuit_breakers.update()
                    .where(
                        circuit_breakers.c.source == source,
                        circuit_breakers.c.open_until.is_not(None),
                        circuit_breakers.c.open_until <= now,
                    )
                    .values(open_until=now + timedelta(seconds=self.trial_timeout_s), updated_at=now)
                ).rowcount
                == 1
            )

    def record_failure(self, source: str, error: str) -> BreakerState:
        now = _now()
        failures = circuit_breakers.c.consecutive_failures + 1
        with self.engine.begin() as conn:
            # The row exists first (a no-op when it does), so the count is one UPDATE that
            # the database serialises: no failure of a concurrent run is lost.
            conn.execute(
                insert_ignoring_duplicates(self.engine, circuit_breakers, ["source"]),
                [{"source": source, "consecutive_failures": 0, "updated_at": now}],
            )
            conn.execute(
                circuit_breakers.update()
                .where(circuit_breakers.c.source == source)
                .values(
                    consecutive_failures=failures,
                    last_error=error[:2000],
                    updated_at=now,
                    open_until=sa.case(
                        (failures >= self.threshold, now + timedelta(seconds=self.cooldown_s)), else_=sa.null()
                    ),
                )
            )
        return self.state(source, now)

    def _upsert(self, source: str, values: dict) -> None:
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    done = conn.execute(
                        circuit_breakers.update().where(circuit_breakers.c.source == source).values(**values)
                    )
                    if done.rowcount == 0:
                        conn.execute(circuit_breakers.insert().values(source=source, **{"last_error": None, **values}))
                return
            except sa.exc.IntegrityError:
                continue  # inserted concurrently: the second pass updates it
