"""A trigger for a workflow's feedback loop: enough new reviewed labels since the last run."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import dagster as dg

from orchestration.core.workflows import asset_job
from orchestration.decision.feedback_assets import FeedbackLoop
from orchestration.review.reviewed import feedback_after
from resources.database import BosunDatabase

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_feedback_sensor(
    name: str, workflow: str, job, min_new: Callable[[], int], minimum_interval_seconds: int = 300
) -> dg.SensorDefinition:
    """Requests one run of `job` once at least `min_new()` feedback rows arrived past the
    cursor (the highest feedback id the last requested run covered). The cursor moves
    when the run is requested: a retrain that its check refused is not retried on the
    same labels, it waits for `min_new()` more. Skips while a run of the job is active."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Runs {job.name} when at least N new reviewed labels of {workflow} exist "
        "since its last run (N from the workflow's setting).",
    )
    def _sensor(context: dg.SensorEvaluationContext, bosun_db: BosunDatabase):
        consumed = json.loads(context.cursor)["feedback_id"] if context.cursor else 0
        n, top = feedback_after(bosun_db.resolved_url, workflow, consumed)
        need = min_new()
        if n < need:
            return dg.SkipReason(f"{n} new reviewed labels since feedback id {consumed}; waiting for {need}")
        if context.instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1):
            return dg.SkipReason(f"{n} new reviewed labels, but a {job.name} run is still active")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{workflow}-feedback-{top}",
                    tags={"bosun/feedback_max_id": str(top), "bosun/new_feedback": str(n)},
                )
            ],
            cursor=json.dumps({"feedback_id": top}),
        )

    return _sensor


def feedback_triggers(
    prefix: str, loop: FeedbackLoop, assets: Sequence[Any], description: str
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.SensorDefinition]:
    """`<prefix>_feedback_job` over `assets` (the loop's, and what is refitted after it), and
    `<prefix>_feedback_sensor`, which runs it every time `loop.retrain_min_feedback()` new
    reviewed labels of the workflow exist (BOSUN_<WORKFLOW>_RETRAIN_MIN_FEEDBACK): a workflow's
    loop is never declared without what starts it."""
    job = asset_job(loop.workflow, f"{prefix}_feedback_job", assets, description)
    return job, build_feedback_sensor(f"{prefix}_feedback_sensor", loop.workflow, job, loop.retrain_min_feedback)
