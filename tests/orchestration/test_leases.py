"""Entity leases on a real database: a live holder keeps its leases however long a step runs
(the heartbeat), and a holder whose lease lapsed anyway (a stalled process) does not act on
the entity once another holder has it: the step is deferred, not done twice (the fence)."""

import time

import sqlalchemy as sa

from orchestration.action.actions import ActionType
from orchestration.action.leases import Leases
from orchestration.action.saga_executor import PlanStep, SagaExecutor, SagaPlan
from orchestration.action.saga_log import SagaLog, leases, saga_engine


def test_a_step_slower_than_the_ttl_keeps_its_leases(db_url):
    mine, other = Leases(db_url, "slow-run", ttl_s=0.6), Leases(db_url, "other-run")
    assert mine.try_acquire(["invoice:1"]) == {"invoice:1"}
    with mine.kept_alive():
        deadline = time.monotonic() + 4 * mine.ttl_s  # four TTLs: without the heartbeat it lapses
        while time.monotonic() < deadline:
            assert other.try_acquire(["invoice:1"]) == set()
            time.sleep(0.05)
    assert mine.held(["invoice:1"]) == {"invoice:1"}
    mine.release()
    assert other.try_acquire(["invoice:1"]) == {"invoice:1"}


def test_a_holder_that_lost_its_lease_defers_the_next_step(db_url):
    """Step one stalls; meanwhile the lease lapses and another run takes the entity. Step two
    is not called for that saga (it is deferred, left to the lease's holder); the other saga,
    whose lease held, is done."""
    calls: list[tuple[str, list[str]]] = []
    thief = Leases(db_url, "other-run")

    def stalled(items):
        calls.append(("first", [it["key"] for it in items]))
        # What a process stalled past its TTL looks like to the database: the lease expired
        # and another holder took it.
        with saga_engine(db_url).begin() as conn:
            conn.execute(leases.update().where(leases.c.entity_key == "entity:a").values(expires_at=0))
        assert thief.try_acquire(["entity:a"]) == {"entity:a"}
        return {}

    def second(items):
        calls.append(("second", [it["key"] for it in items]))
        return {}

    def action(name, do):
        return ActionType(name, do=do, compensate=lambda items: None, verify=lambda items: {it["key"] for it in items})

    plan = SagaPlan(
        [PlanStep("first", action("first", stalled)), PlanStep("second", action("second", second), ("first",))]
    )
    ex = SagaExecutor(
        SagaLog(db_url),
        "fenced",
        plan,
        leases=Leases(db_url, "this-run", ttl_s=60),
        entities=lambda params: [f"entity:{params['entity']}"],
    )
    out = ex.run([{"key": "s-a", "entity": "a"}, {"key": "s-b", "entity": "b"}], "b1")
    assert calls == [("first", ["first:s-a", "first:s-b"]), ("second", ["second:s-b"])]  # action keys
    assert out.done == ["s-b"] and out.deferred == ["s-a"]
    assert SagaLog(db_url).load(["s-a"])["s-a"]["status"] == "running"  # resumed by whoever holds the lease
    with saga_engine(db_url).connect() as conn:
        assert conn.execute(sa.select(leases.c.holder).where(leases.c.entity_key == "entity:a")).scalar() == "other-run"
