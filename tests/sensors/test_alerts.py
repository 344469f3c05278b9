"""Alert sensors: a failed run and a failed check reach the webhook, with a link to the run."""

import warnings

import dagster as dg
import pytest
from webhook_receiver import WebhookReceiver

from resources.notifier import WebhookNotifier

UI = "https://dagster.example.com"


@dg.asset
def flaky_report():
    raise RuntimeError("the report source is down")


@dg.asset(
    check_specs=[
        dg.AssetCheckSpec("rows_present", asset="counted_rows"),
        dg.AssetCheckSpec("rows_positive", asset="counted_rows"),
    ]
)
def counted_rows(context: dg.AssetExecutionContext):
    rows = int(context.run.tags.get("rows", "0"))
    yield dg.Output(rows)
    yield dg.AssetCheckResult(
        check_name="rows_present", passed=rows > 0, severity=dg.AssetCheckSeverity.WARN, description=f"{rows} rows"
    )
    yield dg.AssetCheckResult(check_name="rows_positive", passed=rows >= 0)


@pytest.fixture
def defs():
    from orchestration.definitions import defs

    return defs


def test_alert_sensors_are_registered_and_running_by_default(defs):
    for name in ("run_failure_alert", "check_failure_alert"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert "notifier" in sensor.required_resource_keys


def test_run_failure_sensor_posts_the_failure_with_a_link_to_the_run(defs, tmp_path, monkeypatch):
    monkeypatch.setenv("BOSUN_UI_URL", UI + "/")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            [flaky_report], instance=instance, raise_on_error=False, tags={"dagster/partition": "p1"}
        )
        assert not result.success
        with WebhookReceiver(fail_first=1) as hook:
            context = dg.build_run_status_sensor_context(
                sensor_name="run_failure_alert",
                dagster_instance=instance,
                dagster_run=result.dagster_run,
                dagster_event=result.get_run_failure_event(),
                resources={"notifier": WebhookNotifier(url=hook.url, backoff_s=0.01)},
            ).for_run_failure()
            defs.resolve_sensor_def("run_failure_alert")(context)
    assert hook.attempts == 2  # a 503 first: retried
    [alert] = [r["body"] for r in hook.received]
    assert alert["kind"] == "run_failure" and alert["severity"] == "ERROR"
    assert alert["run_id"] == result.run_id and alert["partition"] == "p1"
    assert alert["run_url"] == f"{UI}/runs/{result.run_id}"
    assert result.run_id and alert["job"] == result.dagster_run.job_name
    assert "flaky_report" in alert["summary"]


def test_check_failure_sensor_sends_each_failed_evaluation_once(defs, tmp_path, monkeypatch):
    monkeypatch.setenv("BOSUN_UI_URL", UI)
    sensor = defs.resolve_sensor_def("check_failure_alert")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, WebhookReceiver() as hook:
        resources = {"notifier": WebhookNotifier(url=hook.url, backoff_s=0.01)}

        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                sensor(ctx)
            return ctx.cursor

        bad = dg.materialize([counted_rows], instance=instance, tags={"rows": "0"})
        assert bad.success  # a WARN check fails without failing the run: only this sensor tells
        cursor = tick(None)
        assert cursor is not None
        [alert] = [r["body"] for r in hook.received]
        assert alert == {
            "kind": "check_failure",
            "severity": "WARN",
            "title": "Check rows_present on counted_rows failed (WARN)",
            "summary": "0 rows",
            "asset": "counted_rows",
            "check": "rows_present",
            "partition": None,
            "run_id": bad.run_id,
            "run_url": f"{UI}/runs/{bad.run_id}",
            "blocking": False,
        }

        assert tick(cursor) == cursor and len(hook.received) == 1  # nothing new: nothing sent again
        good = dg.materialize([counted_rows], instance=instance, tags={"rows": "5"})
        cursor = tick(cursor)
        assert len(hook.received) == 1  # passing evaluations are read past, not sent
        again = dg.materialize([counted_rows], instance=instance, tags={"rows": "0"})
        tick(cursor)
        assert [r["body"]["run_id"] for r in hook.received] == [bad.run_id, again.run_id]
        assert good.run_id not in {r["body"]["run_id"] for r in hook.received}


def test_check_failure_sensor_keeps_its_cursor_when_the_webhook_is_down(defs, tmp_path):
    sensor = defs.resolve_sensor_def("check_failure_alert")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, WebhookReceiver(fail_first=2) as hook:
        dg.materialize([counted_rows], instance=instance, tags={"rows": "0"})
        resources = {"notifier": WebhookNotifier(url=hook.url, attempts=2, backoff_s=0.01)}
        ctx = dg.build_sensor_context(instance=instance, cursor=None, resources=resources)
        with pytest.raises(Exception, match="503"):
            sensor(ctx)
        assert not hook.received
        ctx = dg.build_sensor_context(instance=instance, cursor=None, resources=resources)
        sensor(ctx)  # the next tick starts where the failed one did, and delivers
        assert [r["body"]["check"] for r in hook.received] == ["rows_present"]
