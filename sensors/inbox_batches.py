"""The event sensor: inbox past the cursor -> batches -> one partitioned run per batch.

Generic over workflows: a workflow hands over its event types, partitions and jobs. The
cursor is the last sequence number already batched, so a tick reads one bounded page and
a restart resumes where it stopped; run_key = batch key makes a repeated request a no-op.

No event is skipped: the tick reads only up to the inbox's commit watermark (on Postgres a
writer may hold a lower seq uncommitted while a higher one commits; orchestration/trigger/inbox_fence.py),
and a run claims its events when it starts (`Inbox.claim_batch`). A straggler, a `received`
event below the cursor that no batch claimed `sweep_after_seconds` after it arrived (written
around the fence, or skipped by a claim because another transaction held its row), is swept
into a batch of its own, outside the ranges of batch runs queued, running or just ended.

Backpressure: never more than `policy.max_in_flight` batch runs queued, starting or
running; at the limit the tick skips and says why. Batch size adapts to the backlog
(`adaptive_size`), so a quiet inbox gets small, fast batches and a burst large ones.
"""

import time
from datetime import datetime, timedelta
from typing import Callable, Optional, Protocol, Sequence

import dagster as dg

from orchestration.core import clock
from orchestration.trigger.batching import BatchPolicy, BatchRange, plan_batches
from orchestration.trigger.inbox_fence import WritersInFlight
from resources.database import BosunDatabase

# A failed bootstrap run is tried again after this long, not on every tick.
BOOTSTRAP_RETRY_AFTER_S = 300


class NamedJob(Protocol):
    """What the sensor needs of a job: a JobDefinition, or what `define_asset_job` returns."""

    @property
    def name(self) -> str: ...


_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_inbox_batch_sensor(
    name: str,
    event_types: Sequence[str],
    partitions_def: dg.DynamicPartitionsDefinition,
    batch_job: NamedJob,
    bootstrap_job: Optional[NamedJob],
    bootstrap_assets: Sequence[dg.AssetsDefinition],
    policy: BatchPolicy,
    minimum_interval_seconds: int = 2,
    missing_prerequisite: Optional[Callable[[], Optional[str]]] = None,
    inbox_asset: Optional[dg.AssetKey] = None,
) -> dg.SensorDefinition:
    """`bootstrap_job` materializes `bootstrap_assets` (the context the batches read) when
    they have never been materialized; batches wait until it has (`bootstrap_assets` without a
    `bootstrap_job` is refused). `missing_prerequisite`
    says what the bootstrap lacks (None when nothing, e.g. no sample data yet): while it
    answers, the tick skips with that answer instead of launching a run that can only fail.
    `inbox_asset` (the workflow's inbox in the lineage) gets an observation at every cut:
    the batches, the events they hold, the backlog and the cursor."""
    bootstrap_keys = [k for a in bootstrap_assets for k in a.keys]
    if bootstrap_job is None and bootstrap_keys:
        # The job comes with its daily schedule from `context_refresh` (sensors/workflow_triggers.py):
        # a job made here would run once, at bootstrap, and let the context age after it.
        raise ValueError(f"{name}: context assets need their refresh job (sensors.workflow_triggers.context_refresh)")

    @dg.sensor(
        name=name,
        jobs=[batch_job, *([bootstrap_job] if bootstrap_job is not None else [])],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Cuts batches of {', '.join(event_types)} events from the inbox "
        f"(up to {policy.max_events} events or {policy.max_wait_seconds:g} s) "
        "and requests one run per batch.",
    )
    def _sensor(context: dg.SensorEvaluationContext, bosun_db: BosunDatabase):
        missing = [k for k in bootstrap_keys if context.instance.get_latest_materialization_event(k) is None]
        if missing and bootstrap_job is not None:
            lacking = missing_prerequisite() if missing_prerequisite else None
            if lacking:
                return dg.SkipReason(f"not starting {bootstrap_job.name}: {lacking}")
            return _bootstrap(context, bootstrap_job.name, missing)
        cursor = int(context.cursor or 0)
        in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=batch_job.name, statuses=_IN_PROGRESS))
        slots = min(policy.max_in_flight - in_flight, policy.max_batches_per_tick)
        if slots <= 0:
            return dg.SkipReason(
                f"backpressure: {in_flight} {batch_job.name} run(s) queued or running "
                f"(limit {policy.max_in_flight}); events past seq {cursor} wait"
            )
        now = clock.now()
        try:
            plan = plan_batches(
                bosun_db.inbox(),
                cursor,
                event_types,
                policy,
                now,
                slots,
                busy=lambda: _busy_ranges(context.instance, batch_job.name, policy, now),
            )
        except WritersInFlight as exc:
            return dg.SkipReason(str(exc))
        if not plan.batches and not plan.sweeps:
            return dg.SkipReason(
                f"{len(plan.pending)} event(s) waiting past seq {cursor}; a batch is cut at "
                f"{plan.size} events or after {policy.max_wait_seconds:g} s"
            )
        tags = {"bosun/batch_size_target": str(plan.size), "bosun/backlog": str(plan.backlog)}
        requests = [
            dg.RunRequest(
                run_key=b.key,
                partition_key=b.key,
                job_name=batch_job.name,
                tags={"bosun/batch_events": str(plan.events_in(b)), **tags},
            )
            for b in plan.batches
        ]
        # No run_key for a sweep: its range may be one a run already had (whose claim missed the
        # straggler). A repeat is held off by `_busy_ranges` instead, and claims make it harmless.
        requests += [
            dg.RunRequest(
                partition_key=b.key,
                job_name=batch_job.name,
                tags={"bosun/batch_events": str(plan.events_in(b)), "bosun/sweep": "true", **tags},
            )
            for b in plan.sweeps
        ]
        observations = []
        if inbox_asset is not None:
            observations.append(
                dg.AssetObservation(
                    asset_key=inbox_asset,
                    metadata={
                        "batches_cut": len(plan.batches),
                        "sweeps": len(plan.sweeps),
                        "events_in_batches": sum(plan.events_in(b) for b in plan.batches + plan.sweeps),
                        "backlog": plan.backlog,
                        "cursor": plan.cursor,
                        "batch_keys": ", ".join(r.partition_key for r in requests),
                    },
                )
            )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions_def.build_add_request([r.partition_key for r in requests])],
            cursor=str(plan.cursor),
            asset_events=observations,
        )

    return _sensor


def _busy_ranges(instance: dg.DagsterInstance, job_name: str, policy: BatchPolicy, now: datetime) -> list[BatchRange]:
    """Ranges of the batch job's runs queued or running, or created within `sweep_after_seconds`
    (whatever their end): their claims are due, or their stragglers get a moment first."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS))
    runs += instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, created_after=now - timedelta(seconds=policy.sweep_after_seconds))
    )
    ranges = []
    for run in runs:
        try:
            ranges.append(BatchRange.parse(run.tags.get("dagster/partition", "")))
        except ValueError:
            continue
    return ranges


def _bootstrap(context: dg.SensorEvaluationContext, job_name: str, missing) -> dg.SensorResult | dg.SkipReason:
    running = context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS), limit=1)
    if running:
        return dg.SkipReason(f"waiting for {job_name} to materialize {', '.join(k.to_user_string() for k in missing)}")
    failed = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE]), limit=1
    )
    if failed and failed[0].end_time and time.time() - failed[0].end_time < BOOTSTRAP_RETRY_AFTER_S:
        # One failure, one alert: the next try waits, so a broken bootstrap does not fail every tick.
        return dg.SkipReason(
            f"{job_name} run {failed[0].dagster_run.run_id} failed; trying again "
            f"{BOOTSTRAP_RETRY_AFTER_S // 60} min after it ended (see that run's logs)"
        )
    # No run_key: a failed bootstrap must be retried on a later tick, not deduplicated away.
    return dg.SensorResult(run_requests=[dg.RunRequest(job_name=job_name, tags={"bosun/bootstrap": "true"})])
