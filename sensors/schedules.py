"""Schedules with a declared time zone, catch-up and overlap policy and a business calendar.

`build_partitioned_schedule` ticks on a cron in a named time zone and requests the
partition of the day before the tick (a daily job reconciles a finished day):

- calendar: on a day the calendar closes, the tick is skipped with the reason; the days it
  skipped are reconciled by the next business-day tick (`moves` them there), each as its
  own partition;
- catch-up: after downtime the scheduler evaluates each missed tick (up to the instance's
  `max_catchup_runs`). `"each"` runs every missed tick as its partition (a backfill of the
  missed days); `"latest"` skips every tick older than one interval and runs only the
  latest;
- overlap: `"skip"` skips a tick while a run of the job is queued or running; `"queue"`
  requests it anyway and the run queue orders it (`dagster/schedule_name` limit 1).
"""


from datetime import datetime, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

import dagster as dg

from orchestration.calendar import BusinessCalendar

_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]


def days_to_run(tick_day, calendar: BusinessCalendar) -> list[str]:
    """Partitions a tick on `tick_day` covers: the day before, plus the closed days before it
    whose own ticks were skipped."""
    day = tick_day - timedelta(days=1)
    days = [day]
    while not calendar.is_business_day(day):
        day -= timedelta(days=1)
        days.append(day)
    return sorted(d.isoformat() for d in days)


def build_partitioned_schedule(name: str, job, cron: str, execution_timezone: str, calendar: BusinessCalendar,
                               catch_up: Literal["each", "latest"], overlap: Literal["skip", "queue"],
                               interval: timedelta = timedelta(days=1), now=lambda: datetime.now(timezone.utc),
                               description: str = "") -> dg.ScheduleDefinition:
    tz = ZoneInfo(execution_timezone)

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=execution_timezone,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"{description} Calendar {calendar.country}; catch-up {catch_up}; overlap {overlap}.",
                 tags={"bosun/catch_up": catch_up, "bosun/overlap": overlap})
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.astimezone(tz)
        closed = calendar.closed_because(tick.date())
        if closed:
            return dg.SkipReason(f"{tick.date()} is a {closed} in {calendar.country}; its day is reconciled "
                                 "on the next business day")
        if catch_up == "latest" and now() - context.scheduled_execution_time > interval:
            return dg.SkipReason(f"catch-up policy 'latest': the missed tick of {tick.isoformat()} is skipped")
        if overlap == "skip" and context.instance.get_runs_count(
                dg.RunsFilter(job_name=job.name, statuses=_IN_PROGRESS)):
            return dg.SkipReason(f"overlap policy 'skip': a {job.name} run is still queued or running")
        return [dg.RunRequest(run_key=f"{name}:{day}", partition_key=day,
                              tags={"bosun/scheduled_for": tick.isoformat()})
                for day in days_to_run(tick.date(), calendar)]

    return _schedule
