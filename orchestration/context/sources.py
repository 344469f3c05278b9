"""Reading a context source without letting it crash a batch.

Each read gets a per-call timeout, retries with exponential backoff (tenacity), and a
circuit breaker shared through the database. When the source cannot answer, the last
good snapshot is used and marked stale with its age; with no snapshot the source is
missing. Either way the caller gets a `SourceReading` that says so, and decides how much
that should lower confidence: a degraded source degrades the decision, never the batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import dagster as dg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from orchestration.action.circuit_breaker import CircuitBreaker
from orchestration.context.freshness import FreshnessWindow
from orchestration.core import clock

LIVE, STALE, MISSING = "live", "stale", "missing"


def _is_frame(_context, value) -> bool:
    # imported when checked, not at load: the code location loads without pandas (code server
    # RSS, run start), and the step that made the frame has imported it already
    import pandas as pd

    return isinstance(value, pd.DataFrame)


# The Dagster type of a snapshot asset holding a pandas frame (the UI's "DataFrame", each
# materialization checked to be one), defined without importing pandas: Dagster resolves an
# asset's return annotation (`-> dg.Output[pd.DataFrame]`) when the code location loads.
DataFrame = dg.DagsterType(name="DataFrame", type_check_fn=_is_frame, description="A pandas DataFrame.")


class SourceTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class SourceSettings:
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.2  # first wait; doubles per retry
    backoff_max_s: float = 2.0


@dataclass(frozen=True)
class Snapshot:
    """The last good value of a source (an asset's last materialization) and when it was taken."""

    value: Any
    as_of: datetime | None


@dataclass
class SourceReading:
    name: str
    value: Any
    status: str  # live | stale | missing
    as_of: datetime | None
    age_s: float | None
    freshness: str  # fresh | warn | fail | unknown (the freshness policy's verdict)
    attempts: int = 0
    error: str | None = None
    breaker: str = "closed"
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == LIVE

    def quality_factors(
        self, stale_penalty: Mapping[str, float] | float = 0.2, missing_penalty: float = 0.5
    ) -> list[dict]:
        """What this reading costs a decision's confidence (the context layer's contract:
        `{"name", "penalty", "detail"}`, named `stale_source:NAME` or `missing_source:NAME`):
        nothing when live. `stale_penalty`: one for any stale snapshot, or one per verdict of
        its freshness policy (fresh, warn, fail, unknown)."""
        if self.ok:
            return []
        if self.status == MISSING:
            detail = f"{self.error}; no snapshot to fall back to"
            return [{"name": f"missing_source:{self.name}", "penalty": missing_penalty, "detail": detail}]
        penalty = stale_penalty if isinstance(stale_penalty, (int, float)) else stale_penalty[self.freshness]
        age = "unknown age" if self.age_s is None else f"{self.age_s / 3600:.1f} h old"
        return [
            {
                "name": f"stale_source:{self.name}",
                "penalty": penalty,
                "detail": f"{self.error}; using the snapshot of {self.as_of.isoformat() if self.as_of else '?'} "
                f"({age}, freshness policy: {self.freshness})",
            }
        ]

    def describe(self) -> dict:
        """JSON-ready, without the value: what a decision record and the metadata show."""
        return {
            "status": self.status,
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "freshness": self.freshness,
            "attempts": self.attempts,
            "error": self.error,
            "breaker": self.breaker,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def call_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run `fn` in a daemon thread and give up after `timeout_s`. A client that hangs keeps
    its thread until it returns, but never holds up the batch or the interpreter's exit."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="bosun-source-call")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise SourceTimeout(f"no answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def read_source(
    name: str,
    fetch: Callable[[], Any],
    settings: SourceSettings,
    breaker: CircuitBreaker | None = None,
    snapshot: Snapshot | None = None,
    window: FreshnessWindow | None = None,
    now: datetime | None = None,
) -> SourceReading:
    """Live value if the source answers in time, else the snapshot (stale), else missing."""
    now = now or clock.now()
    started = time.perf_counter()
    before = breaker.state(name, now) if breaker else None
    breaker_state = before.state if before else "closed"
    attempts, error = 0, None
    if breaker_state == "half_open" and not breaker.claim_trial(name, now):
        # Another run is making the one trial call: wait for its verdict, as when open.
        breaker_state = "open"
        error = "circuit half-open: another caller is making the trial call, not called"
    elif breaker_state == "open":
        error = "circuit open: the source kept failing, not called"
    else:
        # A half-open breaker gets one trial call, not a full retry sequence.
        n = 1 if breaker_state == "half_open" else max(1, settings.attempts)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(n),
                reraise=True,
                wait=wait_exponential(multiplier=settings.backoff_s, max=settings.backoff_max_s),
                retry=retry_if_exception_type(Exception),
            ):
                with attempt:
                    attempts += 1
                    value = call_with_timeout(fetch, settings.timeout_s)
            if breaker and (before.consecutive_failures or before.state != "closed"):
                breaker.record_success(name)  # written only when there is something to reset
            return SourceReading(
                name, value, LIVE, now, 0.0, "fresh", attempts, None, "closed", time.perf_counter() - started
            )
        except Exception as exc:  # noqa: BLE001 - any failure of a source degrades, never crashes
            error = f"{type(exc).__name__}: {exc}"[:500]
            if breaker:
                breaker_state = breaker.record_failure(name, error).state
    elapsed = time.perf_counter() - started
    if snapshot is not None:
        age = (now - snapshot.as_of).total_seconds() if snapshot.as_of else None
        verdict = window.verdict(age) if window is not None else "unknown"
        return SourceReading(
            name, snapshot.value, STALE, snapshot.as_of, age, verdict, attempts, error, breaker_state, elapsed
        )
    return SourceReading(name, None, MISSING, None, None, "unknown", attempts, error, breaker_state, elapsed)


def source_quality_factors(
    readings: Mapping[str, SourceReading], stale_penalty: Mapping[str, float] | float, missing_penalty: float
) -> list[dict]:
    """The quality factors of a batch's sources, the same for every record that used them."""
    return [f for r in readings.values() for f in r.quality_factors(stale_penalty, missing_penalty)]


def rows_by(frame: Any, key: str) -> dict[Any, dict]:
    """A data frame's rows as dicts, by their `key` column."""
    return {r[key]: r for r in frame.to_dict("records")}


def snapshot_rows(snapshot: Snapshot | None, key: str, keys: Iterable) -> Snapshot | None:
    """A snapshot asset's frame cut to a batch's keys, by key: what a read of those keys falls
    back on (the snapshot's age stays the asset's)."""
    if snapshot is None:
        return None
    frame = snapshot.value
    return Snapshot(rows_by(frame[frame[key].isin(list(keys))], key), snapshot.as_of)
