"""A workflow's triggers as every workflow declares them, derived from its declarations.

The inbox sensor follows from the batch a workflow declares (`BatchSteps`: its prefix, event
types, partitions and inbox) and its batch policy; its name is `<prefix>_inbox_sensor`, as the
batch job is `<prefix>_batch_job`. So does its recovery sensor (`<prefix>_recovery_sensor`):
every workflow with a batch gets both from `batch_sensors`, so no workflow's events can stay
`received` after a run dies because its author forgot the second sensor. Its context refresh
comes with a daily schedule (`context_refresh`). A workflow's schedules tick in its team's day
(`Workday`: the time zone and the business calendar, declared once): a daily job every day,
and a check over a partitioned day on each business day, the previous day's partition (closed
days with the next business day, every missed day after downtime, never two runs of the job at
once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import dagster as dg

from orchestration.core.batch_assets import PREVIEW_TAG, BatchSteps
from orchestration.core.workflows import SagaHooks, asset_job
from orchestration.trigger.batching import BatchPolicy, env_batch_policy
from orchestration.trigger.calendar import BusinessCalendar
from orchestration.trigger.recovery import RecoveryPolicy, SagaRecovery
from sensors.inbox_batches import NamedJob, build_inbox_batch_sensor
from sensors.recovery import build_recovery_sensor
from sensors.schedules import build_partitioned_schedule


def inbox_sensor(
    steps: BatchSteps,
    batch_job: NamedJob,
    policy: BatchPolicy,
    bootstrap_job: Optional[NamedJob] = None,
    bootstrap_assets: Sequence[dg.AssetsDefinition] = (),
    missing_prerequisite: Optional[Callable[[], Optional[str]]] = None,
) -> dg.SensorDefinition:
    """`<prefix>_inbox_sensor`: the batches of the workflow's inbox, cut by `policy`, each a run
    of `batch_job`; `bootstrap_job` (materializing `bootstrap_assets`) first, when the context
    the batches read was never materialized (sensors/inbox_batches.py). The deployment may
    resize the policy (`BOSUN_<WORKFLOW>_BATCH_POLICY`, `env_batch_policy`)."""
    policy = env_batch_policy(steps.workflow, policy)
    return build_inbox_batch_sensor(
        f"{steps.prefix}_inbox_sensor",
        steps.event_types,
        steps.partitions_def,
        batch_job,
        bootstrap_job,
        bootstrap_assets,
        policy,
        missing_prerequisite=missing_prerequisite,
        inbox_asset=steps.inbox.key,
    )


def recovery_sensor(
    steps: BatchSteps,
    batch_job: NamedJob,
    policy: RecoveryPolicy = RecoveryPolicy(),
    sagas: Optional[SagaHooks] = None,
    saga_stale_after_s: float = 300.0,
) -> dg.SensorDefinition:
    """`<prefix>_recovery_sensor` (sensors/recovery.py): a batch whose run died, crashed or failed
    with events still received is run again, at most `policy.max_runs` times, then its events are
    dead-lettered; a preview is no batch run. With `sagas` (the workflow's saga hooks: an executor
    and `record_settled`), sagas left unfinished outside a batch (after an approval) and untouched
    for `saga_stale_after_s` are finished as `bosun saga recover` would."""
    saga_recovery = None
    if sagas is not None:
        saga_recovery = SagaRecovery(
            steps.workflow, steps.action_resources, sagas.saga_executor, sagas.record_settled, saga_stale_after_s
        )
    return build_recovery_sensor(
        f"{steps.prefix}_recovery_sensor",
        steps.workflow,
        steps.event_types,
        batch_job,
        policy,
        ignore_run_tags={PREVIEW_TAG: "true"},
        saga_recovery=saga_recovery,
    )


def batch_sensors(
    steps: BatchSteps,
    batch_job: NamedJob,
    policy: BatchPolicy,
    recovery: RecoveryPolicy = RecoveryPolicy(),
    sagas: Optional[SagaHooks] = None,
    **inbox: Any,
) -> list[dg.SensorDefinition]:
    """The sensors every batch workflow runs: its inbox sensor (`inbox`: `inbox_sensor`'s
    bootstrap arguments) and its recovery sensor."""
    return [inbox_sensor(steps, batch_job, policy, **inbox), recovery_sensor(steps, batch_job, recovery, sagas)]


def context_refresh(
    workflow: str, prefix: str, assets: Sequence[Any], timezone: str, cron: str, what: str
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    """`<prefix>_context_refresh_job` over the workflow's context assets (`what` they are, for
    the descriptions), and `<prefix>_context_refresh_daily`, which runs it on `cron` in
    `timezone`: the snapshots a batch falls back on when a source is down, and the indexes it
    searches, never age past their freshness policy for want of a trigger. The inbox sensor
    runs the same job first, until it has run once (`bootstrap_job`)."""
    job = asset_job(workflow, f"{prefix}_context_refresh_job", assets, f"Refresh {what}: what the decisions read.")
    schedule = dg.ScheduleDefinition(
        name=f"{prefix}_context_refresh_daily",
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Refreshes {what}.",
    )
    return job, schedule


@dataclass(frozen=True)
class Workday:
    """The day a workflow's team works: the time zone its schedules tick in, and the business
    calendar that closes days."""

    timezone: str
    calendar: BusinessCalendar

    def every_day(self, name: str, job, cron: str, description: str) -> dg.ScheduleDefinition:
        """`job` on `cron` in the team's time zone, every day, running once deployed."""
        return dg.ScheduleDefinition(
            name=name,
            job=job,
            cron_schedule=cron,
            execution_timezone=self.timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description=description,
        )

    def each_business_day(self, name: str, job, cron: str, description: str) -> dg.ScheduleDefinition:
        """The previous day's partition of `job` on `cron` on business days: the closed days
        before it with it, every day missed in downtime after it, and no tick while a run of
        `job` is still queued or running (sensors/schedules.py)."""
        return build_partitioned_schedule(
            name,
            job,
            cron=cron,
            execution_timezone=self.timezone,
            calendar=self.calendar,
            catch_up="each",
            overlap="skip",
            description=description,
        )
