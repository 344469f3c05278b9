"""The delayed settlement check's schedule: each Berlin business morning, the previous due day(s)."""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

BERLIN = ZoneInfo("Europe/Berlin")


def _tick(instance, when):
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("payment_settlements_daily")
    assert schedule.execution_timezone == "Europe/Berlin" and schedule.job_name == "payment_settlement_job"
    return schedule.evaluate_tick(
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        )
    )


def test_each_business_morning_checks_the_payments_due_the_day_before(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        tuesday = _tick(instance, datetime(2026, 11, 10, 8, tzinfo=BERLIN))
        assert [r.partition_key for r in tuesday.run_requests] == ["2026-11-09"]
        monday = _tick(instance, datetime(2026, 11, 16, 8, tzinfo=BERLIN))  # Friday to Sunday
        assert [r.partition_key for r in monday.run_requests] == ["2026-11-13", "2026-11-14", "2026-11-15"]
        holiday = _tick(instance, datetime(2026, 12, 25, 8, tzinfo=BERLIN))
        assert holiday.run_requests == [] and "holiday" in holiday.skip_message
