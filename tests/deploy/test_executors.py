"""The batch job's executor from the environment (orchestration/core/executors.py) and the in-run
IO manager that goes with it: in-process and in memory by default; with
BOSUN_RUN_EXECUTOR=celery, Celery configured from BOSUN_CELERY_* and the steps' values handed over
through Bosun's database, readable by a step in another process, pruned with the retention."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from orchestration.core import clock, settings
from orchestration.core.executors import batch_executor, steps_leave_the_process
from orchestration.core.stored_values import StoredValues
from resources.io_managers import IN_RUN_IO_MANAGER, RunValuesIOManager, in_run_io_manager

BATCHES = dg.StaticPartitionsDefinition(["1-50"])


@dg.op(out=dg.Out(io_manager_key=IN_RUN_IO_MANAGER))
def plan() -> dict:
    return {"iban": "DE89370400440532013000", "amount": 10}


@dg.op
def act(planned: dict) -> int:
    return planned["amount"] * 2


@dg.graph_asset(partitions_def=BATCHES)
def actions():
    return act(plan())


@dg.job(partitions_def=BATCHES, executor_def=dg.multiprocess_executor)
def actions_in_processes():
    """The graph's two ops, each in its own process (what Celery workers do, on one machine)."""
    act(plan())


def test_default_is_in_process_and_in_memory(monkeypatch):
    monkeypatch.delenv("BOSUN_RUN_EXECUTOR", raising=False)
    assert batch_executor() is dg.in_process_executor
    assert not steps_leave_the_process()
    assert in_run_io_manager() is dg.mem_io_manager


def test_celery_is_configured_from_the_environment(monkeypatch):
    monkeypatch.setenv("BOSUN_RUN_EXECUTOR", "celery")
    monkeypatch.delenv("BOSUN_CELERY_BROKER_URL", raising=False)
    with pytest.raises(ValueError, match="BOSUN_CELERY_BROKER_URL"):
        batch_executor()
    monkeypatch.setenv("BOSUN_CELERY_BROKER_URL", "redis://:secret@broker:6379/0")
    monkeypatch.setenv("BOSUN_CELERY_BACKEND_URL", "redis://:secret@broker:6379/1")
    executor = batch_executor()
    assert executor.name == "celery"
    assert isinstance(in_run_io_manager(), RunValuesIOManager)
    monkeypatch.setenv("BOSUN_RUN_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="in_process, celery"):
        batch_executor()


def test_run_values_cross_processes_through_the_database_and_leave_nothing_on_disk(bosun_home, tmp_path):
    # A fresh interpreter runs the job: its step processes import this module to rebuild it.
    home = tmp_path / "dagster"
    home.mkdir()
    here, repo = Path(__file__).parent, Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", f"import test_executors; print(test_executors.run_in_processes({str(home)!r}))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "20"
    for path in home.rglob("*"):
        if path.is_file():
            assert b"DE89370400440532013000" not in path.read_bytes(), path
    # Filed under the batch, so the audit's retention removes it (the op outputs of both steps).
    store = StoredValues(settings.database_url())
    assert store.prune_partitions(clock.now() + timedelta(seconds=1)) == 2


def _job():
    return dg.Definitions(
        jobs=[actions_in_processes],
        resources={IN_RUN_IO_MANAGER: RunValuesIOManager(), "io_manager": RunValuesIOManager()},
    ).resolve_job_def("actions_in_processes")


def run_in_processes(home: str) -> int:
    with dg.instance_for_test(temp_dir=home, set_dagster_home=False) as instance:
        with dg.execute_job(dg.reconstructable(_job), instance=instance, tags={"dagster/partition": "1-50"}) as result:
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            return result.output_for_node("act")
