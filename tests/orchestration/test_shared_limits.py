"""Limits shared through the database: an API key's allowance across two real server
processes, the circuit breaker's failure count under concurrent failures, and exactly one
trial call in half-open."""

import os
import threading
from datetime import timedelta

import httpx
import pytest
from bosun_testing import BosunServer

from orchestration.action.circuit_breaker import CircuitBreaker
from orchestration.api.keys import ApiKey, ApiKeys, KeyRateLimits
from orchestration.context.sources import SourceSettings, read_source
from orchestration.core import clock, settings


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, bosun_home, monkeypatch):
    if request.param == "postgres":
        monkeypatch.setenv("BOSUN_DATABASE_URL", request.getfixturevalue("pg_url"))
    return settings.database_url()


def test_two_server_processes_share_a_keys_allowance(bosun_home, tmp_path):
    burst = 6
    secret, _ = ApiKeys(settings.database_url()).create("erp", ["events:read"], rate_per_s=0.01, burst=burst)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    servers = [BosunServer(env, tmp_path / f"serve-{i}.log") for i in (1, 2)]
    try:
        for server in servers:
            server.wait_ready(timeout=120)
        answers = []
        for i in range(2 * burst):  # alternating between the two processes, as a balancer would
            r = httpx.get(
                f"{servers[i % 2].url}/v1/events/erp/unknown", headers={"Authorization": f"Bearer {secret}"}, timeout=30
            )
            answers.append((i % 2, r.status_code, r.headers.get("Retry-After")))
    finally:
        for server in servers:
            server.stop()
    allowed = [(srv, code) for srv, code, _ in answers if code != 429]
    assert len(allowed) == burst and {code for _, code in allowed} == {404}  # unknown event, but let through
    assert {srv for srv, _ in allowed} == {0, 1}  # both processes granted from the one allowance
    refused = [a for a in answers if a[1] == 429]
    assert len(refused) == burst and all(int(retry) >= 1 for _, _, retry in refused)


def test_key_allowance_refills_at_its_rate(db_url):
    limits = KeyRateLimits(db_url)
    key = ApiKey("k1", "erp", frozenset({"events:read"}), rate_per_s=2.0, burst=3)
    with clock.frozen(clock.now()):
        assert [limits.take(key) for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = limits.take(key)
        assert wait == pytest.approx(0.5, abs=1e-6)  # one token every 1/rate seconds
        assert KeyRateLimits(db_url).take(key) == pytest.approx(0.5, abs=1e-6)  # another process, same bucket
    with clock.frozen(clock.now() + timedelta(seconds=0.5)):
        assert limits.take(key) == 0.0


def test_concurrent_failures_are_counted_exactly(db_url):
    breaker = CircuitBreaker(db_url, threshold=10_000)
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)

    def fail():
        start.wait()
        for _ in range(per_thread):
            breaker.record_failure("erp", "timeout")

    workers = [threading.Thread(target=fail) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    state = breaker.state("erp")
    assert state.consecutive_failures == threads * per_thread and state.state == "closed"


def test_half_open_lets_exactly_one_trial_through(db_url):
    breaker = CircuitBreaker(db_url, threshold=2, cooldown_s=60)
    breaker.record_failure("erp", "down")
    assert breaker.record_failure("erp", "down").state == "open"
    later = clock.now() + timedelta(seconds=61)
    assert breaker.state("erp", later).state == "half_open"

    callers = 8
    start, calls, lock = threading.Barrier(callers), [], threading.Lock()
    readings, others_answered = [], threading.Event()

    def fetch():
        with lock:
            calls.append(1)
        # The trial is slow: every other caller arrives while it is still in flight.
        others_answered.wait(timeout=60)
        return {"ok": True}

    def caller():
        start.wait()
        reading = read_source("erp", fetch, SourceSettings(timeout_s=90, attempts=3, backoff_s=0.0), breaker, now=later)
        with lock:
            readings.append(reading)
            if len(readings) == callers - 1:
                others_answered.set()

    workers = [threading.Thread(target=caller) for _ in range(callers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert len(calls) == 1  # one trial call reached the source
    assert sorted(r.status for r in readings) == ["live"] + ["missing"] * (callers - 1)
    # Each of the others found the trial claimed (at once, or as the circuit open again): none called.
    assert all("not called" in r.error for r in readings if r.status == "missing")
    assert breaker.state("erp").state == "closed"  # the trial succeeded


def test_a_failed_trial_opens_the_circuit_again_and_a_lost_trial_is_retried(db_url):
    breaker = CircuitBreaker(db_url, threshold=1, cooldown_s=60, trial_timeout_s=30)
    breaker.record_failure("erp", "down")
    later = clock.now() + timedelta(seconds=61)
    assert [breaker.claim_trial("erp", later) for _ in range(3)] == [True, False, False]
    # The trial's caller died: after its time limit, one more caller may try.
    assert breaker.claim_trial("erp", later + timedelta(seconds=31)) is True
    assert breaker.record_failure("erp", "still down").state == "open"
    assert breaker.claim_trial("erp", clock.now() + timedelta(seconds=30)) is False
