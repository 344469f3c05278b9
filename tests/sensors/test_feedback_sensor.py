"""The feedback sensor: it runs the loop once enough new reviewed labels exist, once per
set of labels, and not while a loop run is still active."""

import json

import dagster as dg

from assets.invoices.jobs import invoice_feedback_sensor


def _tick(instance, defs, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as ctx:
        return invoice_feedback_sensor.evaluate_tick(ctx)


def _review(defs, n, start=0):
    rows = [
        {
            "workflow": "invoices",
            "subject": f"src:e{i}",
            "kind": "correct",
            "label": "hold",
            "decided": "approve",
            "reviewer": "ap-team",
        }
        for i in range(start, start + n)
    ]
    defs.resources["bosun_db"].feedback().record_many(rows)


def test_the_loop_runs_once_n_new_labels_exist_and_waits_for_n_more(bosun_home, tmp_path, monkeypatch):
    from orchestration.definitions import build_definitions

    monkeypatch.setenv("BOSUN_INVOICES_RETRAIN_MIN_FEEDBACK", "5")
    defs = build_definitions()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _review(defs, 4)
        # Another workflow's feedback does not count towards this one's.
        defs.resources["bosun_db"].feedback().record("tickets", "t:1", "correct", "close", "ops")
        data = _tick(instance, defs)
        assert not data.run_requests and "4 new reviewed labels" in data.skip_message
        _review(defs, 1, start=4)
        data = _tick(instance, defs)
        [req] = data.run_requests
        assert invoice_feedback_sensor.job_name == "invoice_feedback_job" and req.tags["bosun/new_feedback"] == "5"
        top = json.loads(data.cursor)["feedback_id"]
        assert req.run_key == f"invoices-feedback-{top}"

        data = _tick(instance, defs, data.cursor)
        assert not data.run_requests and "0 new reviewed labels" in data.skip_message
        _review(defs, 5, start=10)
        again = _tick(instance, defs, json.dumps({"feedback_id": top}))
        assert [r.run_key for r in again.run_requests] != [req.run_key] and again.run_requests


def test_no_second_loop_run_while_one_is_active(bosun_home, tmp_path, monkeypatch):
    from orchestration.definitions import build_definitions

    monkeypatch.setenv("BOSUN_INVOICES_RETRAIN_MIN_FEEDBACK", "2")
    defs = build_definitions()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _review(defs, 3)
        job = defs.resolve_job_def("invoice_feedback_job")
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
        data = _tick(instance, defs)
        assert not data.run_requests and "still active" in data.skip_message
