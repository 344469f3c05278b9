"""Workflows are found, not listed: every package that declares a `workflow` is one."""

import sys
import textwrap

import dagster as dg
import pytest

from orchestration.core.workflows import Workflow, discover, payload_registry, select

DECLARATION = """
import dagster as dg
from orchestration.core.workflows import Workflow

@dg.asset
def {name}_thing():
    return 1

def register(registry):
    pass

workflow = Workflow(name="{name}", event_types=["{name}.happened"], register_payloads=register, assets=[{name}_thing])
"""


@pytest.fixture
def workflow_package(tmp_path, monkeypatch):
    """A package `toyflows` beside the real ones, with sub-packages written by the test."""
    root = tmp_path / "toyflows"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def add(folder: str, source: str) -> None:
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text(textwrap.dedent(source))

    yield add
    for name in [m for m in sys.modules if m == "toyflows" or m.startswith("toyflows.")]:
        del sys.modules[name]


def test_every_package_that_declares_a_workflow_is_found_and_nothing_else(workflow_package):
    workflow_package("tickets", DECLARATION.format(name="tickets"))
    workflow_package("alerts", DECLARATION.format(name="alerts"))
    workflow_package("helpers", "VALUE = 1\n")  # a package without a declaration is no workflow
    found = discover(["toyflows"])
    assert list(found) == ["alerts", "tickets"] and all(isinstance(w, Workflow) for w in found.values())
    # Its Dagster objects, as the code location merges them (no repository is built here: that
    # needs an instance, and the merged location is test_definitions.py's business).
    definitions = found["tickets"].definitions()
    assert {k.to_user_string() for a in definitions.assets for k in a.keys} == {"tickets_thing"}


def test_two_workflows_with_one_name_are_refused(workflow_package):
    workflow_package("a", DECLARATION.format(name="same"))
    workflow_package("b", DECLARATION.format(name="same").replace("same_thing", "other_thing"))
    with pytest.raises(ValueError, match="two workflows are named 'same'"):
        discover(["toyflows"])


def test_the_shipped_location_derives_its_registries_from_the_declarations():
    from orchestration import definitions

    assert list(definitions.workflows) == ["invoices", "tickets"]
    assert set(definitions.saga_workflows) == set(definitions.review_workflows) == {"invoices", "tickets"}
    assert {"invoice.received", "ticket.created", "ticket.updated"} <= set(
        payload_registry(definitions.workflows).types
    )
    assert [w.name for w in select(definitions.workflows, None, "demo")] == ["invoices", "tickets"]
    with pytest.raises(KeyError, match="unknown workflow 'nope'"):
        select(definitions.workflows, "nope", "demo")


def test_every_shipped_workflow_recovers_its_batches_and_keeps_its_loops_running():
    """Each batch job has an inbox sensor that launches it and a recovery sensor that re-runs it
    (sensors/workflow_triggers.py's `batch_sensors`): no workflow's events stay received after
    its run dies. Each feedback job has the sensor that starts it (`feedback_triggers`), each
    context refresh a daily schedule (`context_refresh`): no snapshot ages for want of a trigger."""
    from orchestration import definitions

    defs = definitions.build_definitions()
    for wf in definitions.workflows.values():
        batch_jobs = [j.name for j in wf.jobs if j.name.endswith("_batch_job")]
        assert batch_jobs, wf.name
        for job in batch_jobs:
            prefix = job.removesuffix("_batch_job")
            for kind in ("inbox", "recovery"):
                sensor = defs.resolve_sensor_def(f"{prefix}_{kind}_sensor")
                assert job in [t.job_name for t in sensor.targets], (wf.name, kind)
        for job in [j.name for j in wf.jobs if j.name.endswith("_feedback_job")]:
            sensor = defs.resolve_sensor_def(job.replace("_job", "_sensor"))
            assert [t.job_name for t in sensor.targets] == [job]
        # What an inbox sensor runs besides the batch is its context refresh: it has a daily schedule.
        for prefix in {j.removesuffix("_batch_job") for j in batch_jobs}:
            inbox = defs.resolve_sensor_def(f"{prefix}_inbox_sensor")
            for job in [t.job_name for t in inbox.targets if not t.job_name.endswith("_batch_job")]:
                schedule = defs.resolve_schedule_def(job.replace("_job", "_daily"))
                assert schedule.job_name == job and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
