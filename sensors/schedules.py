"""Schedules with a declared time zone, catch-up and overlap policy and a business calendar.

`build_partitioned_schedule` ticks on a cron in a named time zone and requests the
partition of the day before the tick (a daily job reconciles a finished day):

- calendar: on a day the calendar closes, the tick is skipped with the reason; the days it
  skipped are reconciled by the next business-day tick (`moves` them there), each as its
  own partition;
- catch-up: Dagster 1.13's scheduler evaluates only the latest missed tick of a schedule
  without a partition set (and `ScheduleDefinition` snapshots never carry one), so catch-up
  is done here. `"each"`: a tick requests every day since the last day this schedule
  requested (at most `max_catchup_days`), each as its own partition and run_key, i.e. a
  backfill of the missed days; `"latest"`: only the tick's own day(s), and a tick evaluated
  more than one interval late is skipped;
- overlap: `"skip"` skips a tick while a run of the job is queued or running; `"queue"`
  requests it anyway and the run queue orders it (`dagster/schedule_name` limit 1).
"""

from datetime import date, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import dagster as dg

from orchestration.core import clock
from orchestration.trigger.calendar import BusinessCalendar

_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def days_to_run(tick_day, calendar: BusinessCalendar) -> list[str]:
    """Partitions a tick on `tick_day` covers: the day before, plus the closed days before it
    whose own ticks were skipped."""
    day = tick_day - timedelta(days=1)
    days = [day]
    while not calendar.is_business_day(day):
        day -= timedelta(days=1)
        days.append(day)
    return sorted(d.isoformat() for d in days)


def _with_missed_days(instance, name: str, days: list[str], max_days: int) -> list[str]:
    """`days` plus every day after the last one this schedule requested (runs are tagged
    with the schedule's name by Dagster), oldest first, at most `max_days` in all."""
    last_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": name}), limit=1)
    last = last_runs[0].tags.get("dagster/partition") if last_runs else None
    if last is None:
        return days
    day, end = date.fromisoformat(last) + timedelta(days=1), date.fromisoformat(days[-1])
    missed = []
    while day < end:
        missed.append(day.isoformat())
        day += timedelta(days=1)
    return sorted(set(missed) | set(days))[-max_days:]


def build_partitioned_schedule(
    name: str,
    job,
    cron: str,
    execution_timezone: str,
    calendar: BusinessCalendar,
    catch_up: Literal["each", "latest"],
    overlap: Literal["skip", "queue"],
    interval: timedelta = timedelta(days=1),
    now=lambda: clock.now(),
    max_catchup_days: int = 31,
    description: str = "",
) -> dg.ScheduleDefinition:
    tz = ZoneInfo(execution_timezone)

    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=execution_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{description} Calendar {calendar.country}; catch-up {catch_up}; overlap {overlap}.",
        tags={"bosun/catch_up": catch_up, "bosun/overlap": overlap},
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.astimezone(tz)
        closed = calendar.closed_because(tick.date())
        if closed:
            return dg.SkipReason(
                f"{tick.date()} is a {closed} in {calendar.country}; its day is reconciled on the next business day"
            )
        if catch_up == "latest" and now() - context.scheduled_execution_time > interval:
            return dg.SkipReason(f"catch-up policy 'latest': the missed tick of {tick.isoformat()} is skipped")
        if overlap == "skip" and context.instance.get_runs_count(
            dg.RunsFilter(job_name=job.name, statuses=_IN_PROGRESS)
        ):
            return dg.SkipReason(f"overlap policy 'skip': a {job.name} run is still queued or running")
        days = days_to_run(tick.date(), calendar)
        if catch_up == "each":
            days = _with_missed_days(context.instance, name, days, max_catchup_days)
        return [
            dg.RunRequest(run_key=f"{name}:{day}", partition_key=day, tags={"bosun/scheduled_for": tick.isoformat()})
            for day in days
        ]

    return _schedule
