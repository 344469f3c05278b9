"""Schedules: time zone, business calendar, catch-up and overlap policies, evaluated as the
scheduler evaluates each (missed) tick."""

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from assets.invoices.reconciliation import reconciliation_job
from assets.invoices.workflow import business_calendar
from sensors.schedules import build_partitioned_schedule, days_to_run

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

BERLIN = ZoneInfo("Europe/Berlin")


def at(y, m, d, hh=7, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=BERLIN)


def schedule(catch_up="each", overlap="skip", now=None):
    return build_partitioned_schedule(
        "recon_test",
        reconciliation_job,
        "0 7 * * *",
        "Europe/Berlin",
        business_calendar,
        catch_up=catch_up,
        overlap=overlap,
        now=lambda: now or datetime.now(timezone.utc),
    )


def tick(sched, instance, when):
    from orchestration.definitions import defs

    return sched.evaluate_tick(
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        )
    )


def test_shipped_schedule_names_its_time_zone_and_policies():
    from orchestration.definitions import defs

    for s in defs.schedules:
        assert s.execution_timezone, s.name
    recon = defs.resolve_schedule_def("payment_reconciliation_daily")
    assert recon.tags == {"bosun/catch_up": "each", "bosun/overlap": "skip"}


def test_closed_days_are_reconciled_by_the_next_business_day():
    assert days_to_run(date(2026, 11, 10), business_calendar) == ["2026-11-09"]  # Tuesday
    assert days_to_run(date(2026, 11, 9), business_calendar) == ["2026-11-06", "2026-11-07", "2026-11-08"]
    # Christmas Friday, weekend: Monday's tick covers Thursday (its Friday tick was skipped) to Sunday.
    assert days_to_run(date(2026, 12, 28), business_calendar) == [
        "2026-12-24",
        "2026-12-25",
        "2026-12-26",
        "2026-12-27",
    ]


def test_a_holiday_tick_is_skipped_with_the_reason(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        data = tick(schedule(), instance, at(2026, 12, 25))
        assert data.run_requests == [] and "public holiday" in data.skip_message
        closure = tick(schedule(), instance, at(2026, 12, 31))
        assert "closure day" in closure.skip_message


def test_catch_up_policies_when_missed_ticks_are_evaluated(tmp_path):
    """Each missed tick evaluated late (Thursday 07:00:30), on an instance where the schedule
    has no runs yet: `each` runs every tick's day, `latest` only the current tick. (Under the
    daemon see test_schedule_catch_up.py: Dagster evaluates only the latest missed tick.)"""
    now = at(2026, 11, 12, 7, 0) + timedelta(seconds=30)
    missed = [at(2026, 11, 10), at(2026, 11, 11), at(2026, 11, 12)]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        each = [tick(schedule("each", now=now), instance, t) for t in missed]
        assert [[r.partition_key for r in d.run_requests] for d in each] == [
            ["2026-11-09"],
            ["2026-11-10"],
            ["2026-11-11"],
        ]
        latest = [tick(schedule("latest", now=now), instance, t) for t in missed]
        assert [len(d.run_requests) for d in latest] == [0, 0, 1]
        assert all("catch-up policy 'latest'" in d.skip_message for d in latest[:2])


@pytest.mark.parametrize("overlap,expect_runs", [("skip", 0), ("queue", 1)])
def test_overlap_policy(tmp_path, overlap, expect_runs):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        from orchestration.definitions import defs

        instance.create_run_for_job(
            job_def=defs.resolve_job_def(reconciliation_job.name), status=dg.DagsterRunStatus.STARTED
        )  # yesterday's run, still going
        data = tick(schedule(overlap=overlap), instance, at(2026, 11, 10))
        assert len(data.run_requests) == expect_runs
        if overlap == "skip":
            assert "still queued or running" in data.skip_message
