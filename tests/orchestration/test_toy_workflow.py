"""A toy third workflow (tests/example_workflows/orders: events -> one source -> a rule -> a
two-step saga with one conditional step -> checks), written only against the Workflow API:
found by discovery, run end to end in-process and through its inbox sensor, its records read
by `bosun audit show` and answered with `bosun review`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.workflows import discover, payload_registry
from orchestration.trigger.runner import run_pending_batches

TESTS = Path(__file__).resolve().parents[1]
BOSUN = Path(sys.executable).parent / "bosun"
PACKAGES = ["assets", "example_workflows"]

# customer, amount, express -> how the event must end, and the stock rows it leaves live
ORDERS = {
    "o-1": ("C1", 120.0, False, "done", {"reserve_stock"}),  # shipped, express skipped
    "o-2": ("C1", 80.0, True, "done", {"reserve_stock", "ship_express"}),
    "o-3": ("C2", 50.0, False, "done", set()),  # blocked: the hard rule refuses
    "o-4": ("C9", 50.0, False, "escalated", set()),  # unknown customer: the rule escalates
    "o-5": ("C1", 900.0, False, "escalated", set()),  # large: unsure, nothing more to read
}


def _event(order_id: str, customer: str, amount: float, express: bool) -> dict:
    return {
        "source": "shop",
        "id": order_id,
        "type": "order.placed",
        "schema_version": 1,
        "occurred_at": clock.now().isoformat(),
        "entity_key": order_id,
        "payload": {"order_id": order_id, "customer_id": customer, "amount": amount, "express": express},
    }


@pytest.fixture
def orders(bosun_home, monkeypatch):
    """The toy workflow, discovered, with an embedded Bosun and a Dagster instance."""
    from resources.defaults import default_resources

    monkeypatch.syspath_prepend(str(TESTS))
    workflows = discover(PACKAGES)
    assert {"invoices", "orders"} <= set(workflows)
    wf = workflows["orders"]
    defs = dg.Definitions.merge(wf.definitions(), dg.Definitions(resources=default_resources()))
    with dg.instance_for_test() as instance:
        yield wf, defs, instance, payload_registry(workflows)


def _ingest(defs, registry, ids):
    summary = defs.resources["bosun_db"].inbox().ingest([_event(i, *ORDERS[i][:3]) for i in ids], registry)
    assert summary.accepted == len(ids)


def _ends(defs) -> tuple[dict, dict]:
    from example_workflows.orders import STOCK

    from orchestration.core.db import engine_for, inbox

    url = defs.resources["bosun_db"].resolved_url
    with engine_for(url).connect() as c:
        rows = c.execute(sa.select(inbox.c.idempotency_key, inbox.c.status)).all()
    states = {k.split(":", 1)[1]: s for k, s in rows}
    with STOCK.engine(url).connect() as c:
        live = c.execute(sa.select(STOCK.table.c.entity, STOCK.table.c.step).where(STOCK.table.c.live)).all()
    effects: dict[str, set] = {}
    for entity, step in live:
        effects.setdefault(entity, set()).add(step)
    return states, effects


def _assert_ends_as_declared(defs, ids):
    states, effects = _ends(defs)
    for i in ids:
        assert (states[i], effects.get(i, set())) == (ORDERS[i][3], ORDERS[i][4]), i


def test_the_toy_workflow_runs_in_process_with_its_checks(orders):
    wf, defs, instance, registry = orders
    graph = defs.resolve_asset_graph()
    assert {"order_inbox", "order_context", "order_decisions", "order_actions"} <= {
        k.to_user_string() for k in graph.get_all_asset_keys()
    }
    _ingest(defs, registry, list(ORDERS))
    inbox = defs.resources["bosun_db"].inbox()
    batches = defs.resolve_job_def("order_batch_job").partitions_def
    report = run_pending_batches(defs, "order_batch_job", batches, wf.event_types, inbox, instance, _policy())
    assert report.batches and not report.failed and report.check_failures == []
    _assert_ends_as_declared(defs, ORDERS)
    # The skipped step is on record: the audit says why o-1 shipped without express.
    audit = defs.resources["bosun_db"].audit()
    steps = [r["record"] for r in audit.records_for("shop:o-1") if r["kind"] == "action"]
    assert {(s["step"], s["status"]) for s in steps} == {("reserve_stock", "done"), ("ship_express", "skipped")}


def _policy():
    from example_workflows.orders import policy

    return policy


def test_the_toy_workflow_runs_through_its_inbox_sensor(orders):
    wf, defs, instance, registry = orders
    _ingest(defs, registry, ["o-1", "o-2", "o-3"])
    sensor = defs.resolve_sensor_def("order_inbox_sensor")
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), cursor="0", definitions=defs, resources=defs.resources
    ) as context:
        result = sensor.evaluate_tick(context)
    assert result.run_requests, result.skip_message
    job = defs.resolve_job_def("order_batch_job")
    instance.add_dynamic_partitions("order_batches", [r.partition_key for r in result.run_requests])
    for request in result.run_requests:
        assert job.execute_in_process(partition_key=request.partition_key, instance=instance).success
    _assert_ends_as_declared(defs, ["o-1", "o-2", "o-3"])


def test_a_toy_batch_whose_run_failed_is_run_again_by_its_recovery_sensor(orders, tmp_path):
    """The recovery sensor comes with the batch (`batch_sensors`): a run that failed with the
    batch's events still received is requested again, and the retry ends them as declared."""
    from resources.database import BosunDatabase

    wf, defs, instance, registry = orders
    _ingest(defs, registry, ["o-1"])
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), cursor="0", definitions=defs, resources=defs.resources
    ) as context:
        (request,) = defs.resolve_sensor_def("order_inbox_sensor").evaluate_tick(context).run_requests
    batch = request.partition_key
    instance.add_dynamic_partitions("order_batches", [batch])
    job = defs.resolve_job_def("order_batch_job")
    # A database the run cannot open (its parent is a file): the context step fails, as a run
    # whose database went away does, and the events stay received in the real one.
    (tmp_path / "not_a_directory").write_text("")
    broken = BosunDatabase(url=f"sqlite:///{tmp_path / 'not_a_directory' / 'bosun.db'}")
    failed = job.execute_in_process(
        partition_key=batch, instance=instance, resources={"bosun_db": broken}, raise_on_error=False
    )
    assert not failed.success
    assert _ends(defs)[0] == {"o-1": "received"}

    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), definitions=defs, resources=defs.resources
    ) as context:
        retry = defs.resolve_sensor_def("order_recovery_sensor").evaluate_tick(context)
    assert [(r.run_key, r.partition_key) for r in retry.run_requests] == [(f"{batch}#retry1", batch)]
    assert job.execute_in_process(partition_key=batch, instance=instance, tags=retry.run_requests[0].tags).success
    _assert_ends_as_declared(defs, ["o-1"])


def _bosun(*args, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        BOSUN_HOME=str(home),
        BOSUN_WORKFLOW_PACKAGES="example_workflows",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run([str(BOSUN), *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_bosun_audit_show_and_review_work_on_the_toy_workflows_records(orders, bosun_home):
    wf, defs, instance, registry = orders
    _ingest(defs, registry, ["o-2", "o-5"])
    batches = defs.resolve_job_def("order_batch_job").partitions_def
    inbox = defs.resources["bosun_db"].inbox()
    run_pending_batches(defs, "order_batch_job", batches, wf.event_types, inbox, instance, _policy())
    shown = _bosun("audit", "show", "shop:o-2", home=bosun_home).stdout
    assert "reserve_stock" in shown and "ship_express" in shown and "shipped" in shown
    pending = json.loads(_bosun("review", "list", "--workflow", "orders", "--json", home=bosun_home).stdout)
    (item,) = [i for i in pending if i["event"] == "shop:o-5"]
    assert item["proposed"] == "ship"  # the toy workflow's own label, from its review hooks
    _bosun("review", "approve", str(item["id"]), "--by", "shop-lead", home=bosun_home)
    # Approving the escalated order runs its saga once: reserved, no express asked.
    states, effects = _ends(defs)
    assert states["o-5"] == "done" and effects["o-5"] == {"reserve_stock"}
