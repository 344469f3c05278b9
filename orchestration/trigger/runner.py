"""Processing the inbox in-process, batch by batch, without a daemon.

The same job, partitions and batch cutting as the sensor path, driven by a loop: this is
what `bosun demo`, the benchmark and the tests use to run a workflow end to end.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import dagster as dg
import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import inbox as inbox_table
from orchestration.core.progress import NO_PROGRESS, Progress
from orchestration.trigger.batching import BatchPolicy, BatchRange, plan_batches
from orchestration.trigger.inbox import Inbox

# The run's events still go to the instance (and the UI); only the console stays quiet.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# As dagster.yaml: DEBUG chatter (the IO manager's "writing file at ...") is not stored,
# which saves a fifth of the event-log writes of a batch run.
INSTANCE_OVERRIDES = {"python_logs": {"python_log_level": "INFO"}}


@dataclass
class BatchRunReport:
    batches: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    check_failures: list[str] = field(default_factory=list)  # "batch: check" that did not pass


def run_pending_batches(
    defs: dg.Definitions,
    job_name: str,
    partitions_def: dg.DynamicPartitionsDefinition,
    event_types: Sequence[str],
    inbox: Inbox,
    instance: dg.DagsterInstance,
    policy: BatchPolicy,
    cursor: int = 0,
    on_batch: Callable[[str, int], None] | None = None,
) -> BatchRunReport:
    """Cut every pending event into batches (no waiting) and run one job per batch, as the
    sensor plans them (`plan_batches`): stragglers below the cursor are swept at once, since
    no run of this loop is in flight; each sweep range is tried once per call.
    `on_batch(key, events)` after each (a progress bar, say)."""
    policy = replace(policy, max_wait_seconds=0, max_batches_per_tick=10_000, sweep_after_seconds=0)
    report = BatchRunReport()
    swept: list[BatchRange] = []
    while True:
        plan = plan_batches(
            inbox, cursor, event_types, policy, clock.now(), slots=50, busy=lambda: swept, size=policy.max_events
        )
        if not plan.batches and not plan.sweeps:
            return report
        swept += plan.sweeps
        done = (
            None
            if on_batch is None
            else (lambda key: on_batch(key, sum(inbox.batch_states(key, list(event_types)).values())))
        )
        run_batches(defs, job_name, partitions_def, [b.key for b in plan.sweeps + plan.batches], instance, report, done)
        cursor = plan.cursor


def run_batches(
    defs: dg.Definitions,
    job_name: str,
    partitions_def: dg.DynamicPartitionsDefinition,
    keys: Sequence[str],
    instance: dg.DagsterInstance,
    report: BatchRunReport | None = None,
    on_batch: Callable[[str], None] | None = None,
) -> BatchRunReport:
    """One in-process run per batch key, in order, each its partition (added if new);
    `on_batch(key)` after each."""
    report = report if report is not None else BatchRunReport()
    # Resolved in an empty context: Dagster builds the repository lazily and reads its
    # definitions state from the instance made current by the last `with instance:` in this
    # thread, which after other runs in the same process may be one already disposed
    # ("undefined DagsterInstance weakref"). Bosun's definitions keep no such state.
    job = contextvars.Context().run(defs.resolve_job_def, job_name)
    instance.add_dynamic_partitions(partitions_def.name, list(keys))
    for key in keys:
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET)
        (report.batches if result.success else report.failed).append(key)
        if on_batch:
            on_batch(key)
        report.check_failures += [
            f"{key}: {e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
        ]
    return report


def run_sample(
    defs: dg.Definitions,
    home,
    events: list[dict],
    registry,
    context_assets: Sequence[dg.AssetsDefinition],
    job_name: str,
    partitions_def: dg.DynamicPartitionsDefinition,
    event_types: Sequence[str],
    policy: BatchPolicy,
    progress: Optional[Progress] = None,
) -> dict:
    """What a workflow's `bosun demo` does with its sample, the same for every workflow: ingest
    the events, materialize the context assets the batches read, run every batch in a temporary
    Dagster instance under `home`, verify the audit chain. Returns the figures every demo reports
    (`progress`, when given, hears of each stage)."""
    progress = progress or NO_PROGRESS
    db = defs.resources["bosun_db"]
    progress.stage("Ingesting the sample into the inbox")
    ingest = db.inbox().ingest(events, registry).as_dict()
    (Path(home) / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(tempdir=str(Path(home) / "dagster"), overrides=INSTANCE_OVERRIDES) as instance:
        progress.stage("Materializing the context the batches read")
        dg.materialize(list(context_assets), instance=instance, resources=defs.resources, run_config=QUIET)
        progress.stage("Running the batches (context, decision, action, checks)", total=ingest["accepted"])
        report = run_pending_batches(
            defs, job_name, partitions_def, event_types, db.inbox(), instance, policy,
            on_batch=lambda _key, n: progress.advance(n),
        )  # fmt: skip
    progress.stage("Verifying the audit chain")
    return {
        "ingest": {k: v for k, v in ingest.items() if k != "rejections"},
        "batches": len(report.batches),
        "failed_batches": report.failed,
        "check_failures": report.check_failures,
        "audit": db.audit().verify().as_dict(),
    }


def outcome_accuracy(inbox: Inbox, event_types: Sequence[str], labels: Mapping[str, str]) -> dict:
    """The decisions taken without a person (events `done`, their outcome's `decision`) against
    the labels by event id (a sample's ground truth); escalated events counted beside them."""
    with inbox.engine.connect() as conn:
        rows = conn.execute(
            sa.select(inbox_table.c.event_id, inbox_table.c.status, inbox_table.c.outcome).where(
                inbox_table.c.type.in_(list(event_types))
            )
        ).all()
    decided = [(labels[e], (o or {}).get("decision")) for e, s, o in rows if s == "done" and e in labels]
    correct = sum(1 for truth, got in decided if truth == got)
    return {
        "decided": len(decided),
        "correct": correct,
        "accuracy": round(correct / len(decided), 4) if decided else None,
        "escalated": sum(1 for _, s, _ in rows if s == "escalated"),
    }
