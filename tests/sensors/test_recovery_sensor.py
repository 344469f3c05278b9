"""The recovery sensor, evaluated as the daemon would, over real failed runs of a toy batch job
and a real inbox: a batch left `received` is run again under a new run key, at most
`max_runs` times, then its events are dead-lettered with their attempts; each step audited
and counted. (A run whose worker is SIGKILLed is the chaos test's: tests/orchestration/test_chaos.py.)"""

import dagster as dg
from bosun_testing import invoice_event
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.trigger.batching import BatchRange
from orchestration.trigger.inbox import Inbox
from orchestration.trigger.recovery import BatchRun, RecoveryPolicy, decide
from orchestration.verification.prometheus import BosunCollector
from resources.database import BosunDatabase
from sensors.recovery import build_recovery_sensor

TYPES = ["invoice.received"]
batches = dg.DynamicPartitionsDefinition(name="toy_batches")


@dg.asset(partitions_def=batches)
def toy_outcomes(context: dg.AssetExecutionContext) -> None:
    # The run dies before any event is terminal, as a crashed batch run leaves them.
    raise RuntimeError(f"toy batch {context.partition_key} failed")


toy_job = dg.define_asset_job("toy_batch_job", selection=[toy_outcomes], executor_def=dg.in_process_executor)
defs = dg.Definitions(assets=[toy_outcomes], jobs=[toy_job])
POLICY = RecoveryPolicy(max_runs=3)
sensor = build_recovery_sensor(
    "toy_recovery_sensor", "toy", TYPES, toy_job, POLICY, ignore_run_tags={"toy/preview": "true"}
)


def _tick(instance, db, cursor=None):
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources={"bosun_db": db}
    ) as ctx:
        return sensor.evaluate_tick(ctx)


def _fail(instance, batch, tags=None):
    res = defs.resolve_job_def("toy_batch_job").execute_in_process(
        partition_key=batch, instance=instance, raise_on_error=False, tags=tags or {}
    )
    assert not res.success


def _recoveries(url):
    registry = CollectorRegistry()
    registry.register(BosunCollector(url))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    return {s.labels["action"]: s.value for s in fams["bosun_recoveries"].samples if s.name.endswith("_total")}


def test_a_failed_batch_is_run_again_then_dead_lettered_with_its_attempts(bosun_home, tmp_path):
    from orchestration.definitions import payload_registry

    db = BosunDatabase()
    inbox = Inbox(db.resolved_url)
    inbox.ingest([invoice_event(i) for i in range(3)], payload_registry)
    batch, done_batch = BatchRange(1, 2).key, BatchRange(3, 3).key
    inbox.set_states([{"key": "s:e2", "status": "done", "reason": "paid"}], done_batch)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(batches.name, [batch, done_batch])
        _fail(instance, batch)
        _fail(instance, done_batch)  # failed too, but every event of it is terminal: nothing to do
        _fail(instance, batch, {"toy/preview": "true"})  # a preview is not one of the batch's runs

        # The failed run still holds a lease under its run id, as a worker killed mid-saga does.
        from orchestration.action.leases import Leases

        dead = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch}))[-1].run_id
        assert Leases(db.resolved_url, dead).try_acquire(["invoice:V1:INV-0"]) == {"invoice:V1:INV-0"}
        first = _tick(instance, db)
        assert Leases(db.resolved_url, "next-run").try_acquire(["invoice:V1:INV-0"]) == {"invoice:V1:INV-0"}
        assert [(r.run_key, r.partition_key, r.tags["bosun/recovery_attempt"]) for r in first.run_requests] == [
            (f"{batch}#retry1", batch, "1")
        ]
        # The next tick sees no newly ended run and requests nothing again.
        assert _tick(instance, db, first.cursor).run_requests == []

        _fail(instance, batch)  # the recovery run fails too
        second = _tick(instance, db, first.cursor)
        assert [r.run_key for r in second.run_requests] == [f"{batch}#retry2"]

        _fail(instance, batch)  # third run of the batch: the budget (max_runs=3) is spent
        third = _tick(instance, db, second.cursor)
        assert third.run_requests == [] and "dead-lettered after 3 run(s)" in third.skip_message

    rows = inbox.lookup(["s:e0", "s:e1", "s:e2"])
    assert [rows[k]["status"] for k in ("s:e0", "s:e1", "s:e2")] == ["dead_lettered", "dead_lettered", "done"]
    letters = db.dead_letters().list()
    assert [(d["event_key"], d["attempts"], d["batch_id"]) for d in letters] == [("s:e0", 3, batch), ("s:e1", 3, batch)]
    assert all(d["error"].startswith("recovery gave up: 2 event(s) still received after 3 run(s)") for d in letters)
    audit = db.audit()
    kinds = audit.count_by_kind()
    assert kinds["recovery_rerun"] == 2 and kinds["recovery_dead_letter"] == 1
    assert audit.verify().ok
    assert _recoveries(db.resolved_url) == {
        "worker_lost": 0,
        "rerun": 2,
        "dead_letter": 1,
        "sagas": 0,
        "sagas_undone": 0,
    }


def test_a_failed_run_dagster_will_retry_is_left_to_dagster_for_the_grace_period():
    failed = BatchRun("r1", "FAILURE", created_at=100.0, ended_at=110.0, will_retry=True)
    policy = RecoveryPolicy(max_runs=4, dagster_retry_grace_s=60)
    assert decide([failed], 5, policy, now=120.0).action == "wait"
    assert decide([failed], 5, policy, now=171.0).action == "rerun"  # Dagster did not retry in time
    retried = BatchRun("r1", "FAILURE", 100.0, 110.0, will_retry=True, retried_as="r2")
    assert decide([retried, BatchRun("r2", "STARTED", 111.0, None)], 5, policy, 120.0).action == "wait"
    assert decide([retried, BatchRun("r2", "FAILURE", 111.0, 130.0)], 5, policy, 131.0).run_key("B") == "B#retry2"
    assert decide([BatchRun("r", "SUCCESS", 1.0, 2.0)], 0, policy, 3.0).action == "none"
    runs = [BatchRun(f"r{i}", "FAILURE", float(i), float(i)) for i in range(4)]
    assert decide(runs, 1, policy, 10.0).action == "dead_letter"
    # Launches that never started (an overloaded host, a code server away) are no attempt at
    # the events; only max_launches bounds them.
    never = [BatchRun(f"n{i}", "FAILURE", float(i), float(i), started=False) for i in range(6)]
    assert decide(runs[:3] + never, 1, policy, 10.0).action == "rerun"
    assert decide(runs[:3] + never * 2, 1, policy, 10.0).action == "dead_letter"


def _deferred_approved_saga(db, erp, outbox, key: str | None = None) -> dict:
    """An approved payment whose executor was deferred by another holder's lease: its saga is
    planned and unfinished, as a crash between approval and execution leaves it."""
    import sys
    from pathlib import Path

    from assets.invoices import payment_saga
    from orchestration.action.leases import Leases

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
    import saga_fault_worker as worker

    url = db.resolved_url
    worker.seed(erp, 1)
    item = worker.saga_items(1)[0]
    item = {**item, "key": key or item["key"]}
    other = Leases(url, "someone-else")
    other.try_acquire(payment_saga.entities(item))
    approved = payment_saga.payment_executor(erp, url, "approver", outbox=outbox, lease_wait_s=0.0, limit=None)
    assert approved.run([item], None).deferred == [item["key"]]
    other.release()
    return item


def _saga_recovery_tick(db, erp, outbox, tmp_path):
    """One tick of a recovery sensor with the invoice workflow's saga hooks, stale after 0 s."""
    from assets.invoices import payment_saga
    from orchestration.trigger.recovery import SagaRecovery

    def executor(resources, holder):
        return payment_saga.payment_executor(
            resources["erp"], resources["bosun_db"].resolved_url, holder, outbox=resources["outbox"], limit=None
        )

    hooks = SagaRecovery(
        "invoices", frozenset({"erp", "outbox"}), executor, payment_saga.record_settled, stale_after_s=0.0
    )
    with_sagas = build_recovery_sensor("toy_saga_recovery", "invoices", TYPES, toy_job, POLICY, saga_recovery=hooks)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), definitions=defs, resources={"bosun_db": db, "erp": erp, "outbox": outbox}
        ) as ctx:
            return with_sagas.evaluate_tick(ctx)


def test_a_saga_left_unfinished_outside_a_batch_is_finished_by_the_sensor(bosun_home, tmp_path):
    """Once untouched for `stale_after_s`, the sensor resumes the saga with the workflow's hooks."""
    from assets.invoices.erp import ERPResource
    from orchestration.action.saga_log import SagaLog
    from resources.outbox import NotificationOutbox

    db, erp, outbox = BosunDatabase(), ERPResource(), NotificationOutbox()
    item = _deferred_approved_saga(db, erp, outbox)
    data = _saga_recovery_tick(db, erp, outbox, tmp_path)
    assert data.run_requests == [] and "1 stale saga(s): 1 done" in data.skip_message
    assert SagaLog(db.resolved_url).load([item["key"]])[item["key"]]["status"] == "done"
    assert erp.live_payment_keys([f"schedule_payment:{item['key']}"]) == {f"schedule_payment:{item['key']}"}
    assert db.audit().count_by_kind()["recovery_sagas"] == 1


def test_the_saga_of_an_event_recovery_gave_up_on_is_undone_not_carried_forward(bosun_home, tmp_path):
    """The event was dead-lettered (recovery gave up on its batch) while its approved saga was
    left planned: the stale-saga pass must not pay it behind its dead letter's back. The saga is
    rolled back (audited), the event stays dead-lettered, nothing is paid."""
    from assets.invoices.erp import ERPResource
    from orchestration.action.saga_log import SagaLog
    from orchestration.definitions import payload_registry
    from resources.outbox import NotificationOutbox

    db, erp, outbox = BosunDatabase(), ERPResource(), NotificationOutbox()
    inbox = db.inbox()
    inbox.ingest([invoice_event(0)], payload_registry)
    _deferred_approved_saga(db, erp, outbox, key="s:e0")  # the saga of the inbox's event
    inbox.set_states([{"key": "s:e0", "status": "dead_lettered", "attempts": 3, "reason": "recovery gave up"}])
    data = _saga_recovery_tick(db, erp, outbox, tmp_path)
    assert "1 saga(s) of dead-lettered events undone (0 left" in data.skip_message
    assert SagaLog(db.resolved_url).load(["s:e0"])["s:e0"]["status"] not in ("planned", "running", "done")
    assert erp.live_payment_keys(["schedule_payment:s:e0"]) == set()
    assert inbox.lookup(["s:e0"])["s:e0"]["status"] == "dead_lettered"
    assert db.audit().count_by_kind()["recovery_sagas_undone"] == 1
    assert _recoveries(db.resolved_url)["sagas_undone"] == 1
