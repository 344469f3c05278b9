"""Alerts: a failed run or a failed asset check becomes a message to the `notifier` resource.

Workflow-independent: the run-failure sensor watches every job of the code location, the
check sensor every check evaluation in the instance's event log. Each alert carries a link
to the run in the Dagster UI (BOSUN_UI_URL, default http://127.0.0.1:3000).

Delivery is at least once: when the notifier cannot deliver (after its own retries), the
tick fails, its cursor is not saved, and the next tick sends again (the run-failure
sensor's cursor is Dagster's; the check sensor keeps the storage id of the last run-end
event whose run's evaluations it sent). An alert the receiver refuses outright (a 4xx) is logged on the
tick and skipped, so one bad alert cannot block every later one.
"""

import time

import dagster as dg

from orchestration.core import settings
from resources.notifier import AlertRefused, Notifier

# A fresh check sensor looks back this far, not over the whole history of the instance.
FIRST_TICK_LOOKBACK_S = 3600
MAX_RUNS_PER_TICK = 200


def run_url(run_id: str) -> str:
    return f"{settings.ui_url()}/runs/{run_id}"


def run_failure_alert_for(run: dg.DagsterRun, message: str | None) -> dict:
    tags = run.tags or {}
    return {
        "kind": "run_failure",
        "severity": "ERROR",
        "title": f"Run of {run.job_name} failed"
        + (f" (partition {tags['dagster/partition']})" if tags.get("dagster/partition") else ""),
        "summary": message or "",
        "job": run.job_name,
        "run_id": run.run_id,
        "partition": tags.get("dagster/partition"),
        "run_url": run_url(run.run_id),
    }


def check_failure_alert_for(record: dg.EventLogRecord) -> dict | None:
    evaluation = record.event_log_entry.dagster_event.event_specific_data
    if evaluation.passed:
        return None
    asset = evaluation.asset_key.to_user_string()
    severity = evaluation.severity.value
    return {
        "kind": "check_failure",
        "severity": severity,
        "title": f"Check {evaluation.check_name} on {asset} failed ({severity})",
        "summary": evaluation.description or "",
        "asset": asset,
        "check": evaluation.check_name,
        "partition": evaluation.partition,
        "run_id": record.run_id,
        "run_url": run_url(record.run_id),
        "blocking": bool(evaluation.blocking),
    }


def deliver(context, notifier: Notifier, alert: dict) -> bool:
    try:
        notifier.send(alert)
        return True
    except AlertRefused as exc:
        context.log.error(f"alert not delivered ({exc}): {alert['title']}")
        return False


@dg.run_failure_sensor(
    name="run_failure_alert",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Sends every failed run of this code location to the notifier, with a link.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, notifier: Notifier):
    deliver(context, notifier, run_failure_alert_for(context.dagster_run, context.failure_event.message))


# Check evaluations are read run by run, from the runs that ended since the cursor: on
# Dagster's default SQLite storage (one event shard per run) a global cursor over
# ASSET_CHECK_EVALUATION events is refused, while run-end events are indexed everywhere.
RUN_END_EVENTS = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED)


def ended_runs_since(instance: dg.DagsterInstance, cursor: str | None, limit: int = MAX_RUNS_PER_TICK):
    """(storage id, run id) of runs that ended after the cursor, oldest first, and the next
    cursor. The cursor is the storage id of the last run-end event handled."""
    after = int(cursor) if cursor else None
    found, caps = [], []
    for event_type in RUN_END_EVENTS:
        flt = (
            dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after)
            if after is not None
            else dg.RunStatusChangeRecordsFilter(event_type, after_timestamp=time.time() - FIRST_TICK_LOOKBACK_S)
        )
        records = instance.fetch_run_status_changes(flt, limit=limit, ascending=True).records
        found += [(r.storage_id, r.run_id) for r in records]
        if len(records) == limit:  # more of this kind wait: go no further than its last one
            caps.append(records[-1].storage_id)
    cap = min(caps) if caps else None
    found = sorted(f for f in found if cap is None or f[0] <= cap)
    return found, (str(found[-1][0]) if found else cursor)


@dg.sensor(
    name="check_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Sends every failed asset check evaluation (ERROR or WARN) to the notifier, with a link.",
)
def check_failure_alert(context: dg.SensorEvaluationContext, notifier: Notifier):
    runs, cursor = ended_runs_since(context.instance, context.cursor)
    evaluations = sent = 0
    for _, run_id in runs:
        conn = context.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        for record in conn.records:
            evaluations += 1
            alert = check_failure_alert_for(record)
            if alert and deliver(context, notifier, alert):
                sent += 1
    if cursor:
        context.update_cursor(cursor)
    return dg.SkipReason(f"{len(runs)} ended run(s), {evaluations} check evaluation(s), {sent} failure(s) sent")


sensors = [run_failure_alert, check_failure_alert]
