"""Reading a source: timeout, retries, snapshot fallback, and a breaker shared through the database."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from orchestration.action.circuit_breaker import CircuitBreaker
from orchestration.context.freshness import FreshnessWindow
from orchestration.context.sources import Snapshot, SourceSettings, read_source

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

FAST = SourceSettings(timeout_s=0.2, attempts=3, backoff_s=0.01, backoff_max_s=0.02)


class Flaky:
    def __init__(self, failures: int, value="ok", hang_s: float = 0.0):
        self.calls, self.failures, self.value, self.hang_s = 0, failures, value, hang_s

    def __call__(self):
        self.calls += 1
        if self.hang_s:
            time.sleep(self.hang_s)
        if self.calls <= self.failures:
            raise ConnectionError(f"down (call {self.calls})")
        return self.value


def test_a_transient_failure_is_retried_and_read_live(db_url):
    fetch = Flaky(failures=2)
    r = read_source("vendors", fetch, FAST, CircuitBreaker(db_url))
    assert (r.status, r.value, r.attempts, fetch.calls) == ("live", "ok", 3, 3)


def test_a_source_that_hangs_times_out_and_falls_back_to_the_snapshot_marked_stale(db_url):
    taken = datetime.now(timezone.utc) - timedelta(hours=30)
    fetch = Flaky(failures=0, hang_s=10)
    started = time.perf_counter()
    r = read_source(
        "vendors",
        fetch,
        FAST,
        CircuitBreaker(db_url),
        Snapshot("old rows", taken),
        FreshnessWindow(fail_s=48 * 3600, warn_s=26 * 3600),
    )
    # Three attempts of a 10 s hang would take 30 s: the timeouts cut each one short.
    assert time.perf_counter() - started < 8.0
    assert (r.status, r.value, r.freshness) == ("stale", "old rows", "warn")
    assert 30 * 3600 - 5 < r.age_s < 30 * 3600 + 60
    assert "SourceTimeout" in r.error and r.attempts == 3


def test_a_source_that_fails_with_no_snapshot_is_missing(db_url):
    r = read_source("payments", Flaky(failures=99), FAST, CircuitBreaker(db_url))
    assert r.status == "missing" and r.value is None and "ConnectionError" in r.error


def test_the_breaker_opens_after_repeated_failures_and_is_shared_across_instances(db_url):
    fetch = Flaky(failures=99)
    for _ in range(2):
        read_source("erp", fetch, FAST, CircuitBreaker(db_url, threshold=2, cooldown_s=60))
    assert fetch.calls == 6
    # A new breaker object (another run, another process) reads the same state.
    other = CircuitBreaker(db_url, threshold=2, cooldown_s=60)
    assert other.state("erp").state == "open"
    r = read_source("erp", fetch, FAST, other, Snapshot("snap", None))
    assert fetch.calls == 6 and r.status == "stale" and r.breaker == "open" and "circuit open" in r.error
    # After the cooldown one trial call is made; success closes the circuit.
    later = datetime.now(timezone.utc) + timedelta(seconds=61)
    assert other.state("erp", later).state == "half_open"
    healthy = Flaky(failures=0)
    r = read_source("erp", healthy, FAST, other, now=later)
    assert r.status == "live" and healthy.calls == 1 and other.state("erp").state == "closed"


def test_freshness_verdicts():
    w = FreshnessWindow(fail_s=100, warn_s=50)
    assert [w.verdict(a) for a in (10, 60, 101, None)] == ["fresh", "warn", "fail", "unknown"]


def test_a_degraded_reading_costs_by_the_contract_and_a_live_one_nothing():
    from orchestration.context.sources import SourceReading, source_quality_factors

    as_of = datetime(2026, 1, 1, tzinfo=timezone.utc)
    readings = {
        "crm": SourceReading("crm", {}, "live", as_of, 0.0, "fresh"),
        "vendors": SourceReading("vendors", {}, "stale", as_of, 7200.0, "warn", error="TimeoutError: slow"),
        "payments": SourceReading("payments", None, "missing", None, None, "unknown", error="HTTP 503"),
    }
    factors = source_quality_factors(readings, {"fresh": 0.05, "warn": 0.15}, 0.35)
    assert [(f["name"], f["penalty"]) for f in factors] == [
        ("stale_source:vendors", 0.15),
        ("missing_source:payments", 0.35),
    ]
    assert "2.0 h old, freshness policy: warn" in factors[0]["detail"] and "no snapshot" in factors[1]["detail"]
    # One penalty for any stale snapshot works too.
    assert readings["vendors"].quality_factors(0.2)[0]["penalty"] == 0.2


def test_live_rows_against_the_snapshot_record_conflicts_resolved_by_recency():
    import pandas as pd

    from orchestration.context.conflicts import live_vs_snapshot
    from orchestration.context.sources import SourceReading, snapshot_rows

    old, now = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)
    frame = pd.DataFrame([{"id": "a", "tier": "low"}, {"id": "b", "tier": "low"}, {"id": "c", "tier": "high"}])
    snap = snapshot_rows(Snapshot(frame, old), "id", ["a", "b"])
    assert set(snap.value) == {"a", "b"} and snap.as_of == old
    live = SourceReading("customers", {"a": {"tier": "high"}, "b": {"tier": "low"}}, "live", now, 0.0, "fresh")
    found = live_vs_snapshot("customer", "crm", live, snap, ["tier"])
    [c] = found["a"]
    assert set(found) == {"a"} and (c["field"], c["chosen_source"], c["value"]) == (
        "customer.tier",
        "crm.customers (live)",
        "high",
    )
