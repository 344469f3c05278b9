"""Catch-up after daemon downtime, through the daemon's own scheduler loop with frozen time."""

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._scheduler.scheduler import launch_scheduled_runs

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

BERLIN = ZoneInfo("Europe/Berlin")


def _iterate(ctx, now):
    with freeze_time(now):
        list(
            launch_scheduled_runs(
                ctx, logging.getLogger("test-scheduler"), end_datetime_utc=now, iteration_times={}, max_catchup_runs=5
            )
        )


def test_missed_ticks_each_run_their_day_after_two_days_down(bosun_home, tmp_path):
    target = ModuleTarget(
        module_name="orchestration.definitions", attribute="defs", working_directory=None, location_name="bosun"
    )
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with create_test_daemon_workspace_context(target, instance) as ctx:
            _iterate(ctx, datetime(2026, 11, 9, 6, 59, tzinfo=BERLIN))  # Monday, before the tick: schedule seen
            _iterate(ctx, datetime(2026, 11, 9, 7, 0, 30, tzinfo=BERLIN))  # Monday's tick
            monday = instance.get_runs()
            assert monday and {r.status for r in monday} == {dg.DagsterRunStatus.QUEUED}
            # No run queue daemon here: end Monday's runs, or the overlap policy (skip) would
            # rightly skip the next ticks.
            for run in monday:
                instance.report_run_canceled(run)
            # The daemon is down from Monday 07:01 until Thursday 07:00:30: two ticks missed.
            _iterate(ctx, datetime(2026, 11, 12, 7, 0, 30, tzinfo=BERLIN))
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": "payment_reconciliation_daily"}))
        days = sorted(r.tags["dagster/partition"] for r in runs)
        # Monday's tick covers Fri-Sun. The daemon evaluates only Thursday's tick (Dagster does not
        # catch up schedules without a partition set), which requests Monday to Wednesday,
        # each as its own partition.
        assert days == ["2026-11-06", "2026-11-07", "2026-11-08", "2026-11-09", "2026-11-10", "2026-11-11"]
