"""A workflow's triggers as every workflow declares them, derived from its declarations.

The inbox sensor follows from the batch a workflow declares (`BatchSteps`: its prefix, event
types, partitions and inbox) and its batch policy; its name is `<prefix>_inbox_sensor`, as the
batch job is `<prefix>_batch_job`. A workflow's schedules tick in its team's day (`Workday`: the
time zone and the business calendar, declared once): a daily job every day, and a check over a
partitioned day on each business day, the previous day's partition (closed days with the next
business day, every missed day after downtime, never two runs of the job at once).
"""

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import dagster as dg

from orchestration.core.batch_assets import BatchSteps
from orchestration.trigger.batching import BatchPolicy, env_batch_policy
from orchestration.trigger.calendar import BusinessCalendar
from sensors.inbox_batches import NamedJob, build_inbox_batch_sensor
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
