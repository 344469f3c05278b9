"""Which Dagster executor a workflow's batch job runs its steps on, chosen from the environment.

- `BOSUN_RUN_EXECUTOR` unset or `in_process` (the default): every step of a batch run in the
  run's own process, one after another. The batch steps are sequential anyway, and a process
  per step costs seconds of code-location loading; concurrency comes from several runs.
- `BOSUN_RUN_EXECUTOR=celery`: each step is a Celery task (`dagster_celery.celery_executor`),
  picked up by whichever worker is free, on any machine that shares the instance's Postgres
  and the broker. `BOSUN_CELERY_BROKER_URL` (required: `redis://host:6379/0` or
  `amqp://user:pass@host:5672//`) and `BOSUN_CELERY_BACKEND_URL` (optional, default `rpc://`)
  are read by Dagster when the run starts (`env:` config), so a password in them never lands
  in the run's stored config. Steps then hand their values over through the database
  (`steps_leave_the_process()`; the resources bind the in-run IO manager accordingly).

Read when the code location loads: the code server, the run workers it launches and the
Celery workers must all see the same values.
"""

from __future__ import annotations

import os
from enum import Enum

import dagster as dg

RUN_EXECUTOR_ENV = "BOSUN_RUN_EXECUTOR"
CELERY_BROKER_ENV = "BOSUN_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "BOSUN_CELERY_BACKEND_URL"


class RunExecutor(str, Enum):
    IN_PROCESS = "in_process"
    CELERY = "celery"


def run_executor() -> RunExecutor:
    raw = os.environ.get(RUN_EXECUTOR_ENV, "").strip().lower().replace("-", "_")
    if not raw:
        return RunExecutor.IN_PROCESS
    try:
        return RunExecutor(raw)
    except ValueError:
        allowed = ", ".join(e.value for e in RunExecutor)
        raise ValueError(f"{RUN_EXECUTOR_ENV}={raw!r}: expected one of {allowed}") from None


def steps_leave_the_process() -> bool:
    """Whether a batch run's steps may run in other processes (so their outputs must not stay
    in one process's memory)."""
    return run_executor() is not RunExecutor.IN_PROCESS


def batch_executor() -> dg.ExecutorDefinition:
    """The executor of a workflow's batch job (see the module docstring)."""
    if run_executor() is RunExecutor.IN_PROCESS:
        return dg.in_process_executor
    if not os.environ.get(CELERY_BROKER_ENV):
        # Dagster's own default (amqp://guest@localhost) would silently send the steps to a
        # broker no worker may listen on.
        raise ValueError(f"{RUN_EXECUTOR_ENV}=celery needs {CELERY_BROKER_ENV} (redis://... or amqp://...)")
    from dagster_celery import celery_executor  # only imported when asked: Celery costs import time

    config: dict = {"broker": {"env": CELERY_BROKER_ENV}}
    if os.environ.get(CELERY_BACKEND_ENV):
        config["backend"] = {"env": CELERY_BACKEND_ENV}
    return celery_executor.configured(config, name="celery")
