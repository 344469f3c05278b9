"""The event sensor: inbox past the cursor -> batches -> one partitioned run per batch.

Generic over workflows: a workflow hands over its event types, partitions and jobs. The
cursor is the last sequence number already batched, so a tick reads one bounded page and
a restart resumes where it stopped; run_key = batch key makes a repeated request a no-op.

Backpressure: never more than `policy.max_in_flight` batch runs queued, starting or
running; at the limit the tick skips and says why. Batch size adapts to the backlog
(`adaptive_size`), so a quiet inbox gets small, fast batches and a burst large ones.
"""


from typing import Sequence, Union

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition  # noqa: F401

from orchestration.batching import BatchPolicy, adaptive_size, cut_batches
from orchestration import clock
from resources.database import BosunDatabase

_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]


def build_inbox_batch_sensor(
    name: str,
    event_types: Sequence[str],
    partitions_def: dg.DynamicPartitionsDefinition,
    batch_job: Union[dg.JobDefinition, "UnresolvedAssetJobDefinition"],
    bootstrap_job: Union[dg.JobDefinition, "UnresolvedAssetJobDefinition"],
    bootstrap_assets: Sequence[dg.AssetsDefinition],
    policy: BatchPolicy,
    minimum_interval_seconds: int = 5,
) -> dg.SensorDefinition:
    """`bootstrap_job` materializes `bootstrap_assets` (the context the batches read) when
    they have never been materialized; batches wait until it has."""
    bootstrap_keys = [k for a in bootstrap_assets for k in a.keys]

    @dg.sensor(name=name, jobs=[batch_job, bootstrap_job], minimum_interval_seconds=minimum_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Cuts batches of {', '.join(event_types)} events from the inbox "
                           f"(up to {policy.max_events} events or {policy.max_wait_seconds:g} s) "
                           "and requests one run per batch.")
    def _sensor(context: dg.SensorEvaluationContext, bosun_db: BosunDatabase):
        missing = [k for k in bootstrap_keys if context.instance.get_latest_materialization_event(k) is None]
        if missing:
            return _bootstrap(context, bootstrap_job.name, missing)
        cursor = int(context.cursor or 0)
        in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=batch_job.name, statuses=_IN_PROGRESS))
        slots = min(policy.max_in_flight - in_flight, policy.max_batches_per_tick)
        if slots <= 0:
            return dg.SkipReason(f"backpressure: {in_flight} {batch_job.name} run(s) queued or running "
                                 f"(limit {policy.max_in_flight}); events past seq {cursor} wait")
        inbox = bosun_db.inbox()
        backlog = inbox.backlog_after(cursor, list(event_types), policy.max_events * policy.max_in_flight)
        size = adaptive_size(backlog, policy)
        pending = inbox.pending_after(cursor, list(event_types), size * slots)
        batches = cut_batches(pending, policy, clock.now(), size=size, limit=slots)
        if not batches:
            return dg.SkipReason(f"{len(pending)} event(s) waiting past seq {cursor}; a batch is cut at "
                                 f"{size} events or after {policy.max_wait_seconds:g} s")
        keys = [b.key for b in batches]
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=k, partition_key=k, job_name=batch_job.name,
                                        tags={"bosun/batch_events": str(_count(pending, b)),
                                              "bosun/batch_size_target": str(size),
                                              "bosun/backlog": str(backlog)})
                          for k, b in zip(keys, batches)],
            dynamic_partitions_requests=[partitions_def.build_add_request(keys)],
            cursor=str(batches[-1].last),
        )

    return _sensor


def _count(pending, batch) -> int:
    return sum(1 for seq, _ in pending if batch.first <= seq <= batch.last)


def _bootstrap(context: dg.SensorEvaluationContext, job_name: str, missing) -> dg.SensorResult | dg.SkipReason:
    running = context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS), limit=1)
    if running:
        return dg.SkipReason(f"waiting for {job_name} to materialize {', '.join(k.to_user_string() for k in missing)}")
    # No run_key: a failed bootstrap must be retried on a later tick, not deduplicated away.
    return dg.SensorResult(run_requests=[dg.RunRequest(job_name=job_name, tags={"bosun/bootstrap": "true"})])
