"""The event sensor, evaluated as the daemon would, against a real instance and inbox."""

import dagster as dg
from bosun_testing import invoice_event

from assets.invoices import context_assets
from assets.invoices.triggers import invoice_inbox_sensor
from assets.invoices.workflow import batch_policy
from orchestration.trigger.batching import BatchRange


def _tick(instance, defs, cursor=None):
    # As a context manager: the context enters the instance it makes from the ref, and only
    # leaving it leaves that instance (else Dagster's current definitions-state storage is left
    # pointing at an instance that is gone, and a later repository build fails on it).
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources
    ) as ctx:
        return invoice_inbox_sensor.evaluate_tick(ctx)


def _materialize_context(instance, defs):
    for a in context_assets:
        for key in a.keys:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))


def _write_policy_documents(bosun_home):
    policies = bosun_home / "sample" / "policies"
    policies.mkdir(parents=True)
    (policies / "payments.md").write_text("# Payments\n\nInvoices above the limit need approval.\n")


def test_first_tick_bootstraps_the_context_assets(bosun_home, tmp_path):
    from orchestration.definitions import build_definitions

    _write_policy_documents(bosun_home)
    defs = build_definitions()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        data = _tick(instance, defs)
        assert [r.job_name for r in data.run_requests] == ["invoice_context_refresh_job"]
        assert data.cursor is None


def test_a_workflow_without_a_refresh_job_of_its_own_gets_one_for_its_context_assets(bosun_home, tmp_path):
    """The ticket workflow's context assets get their refresh job from `context_refresh`: the
    sensor's first tick runs it, and batches wait for it (a batch before its CRM snapshot can only fail)."""
    from assets.tickets import context_assets as ticket_context
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    ticket_inbox_sensor = defs.resolve_sensor_def("ticket_inbox_sensor")
    job = defs.resolve_job_def("ticket_context_refresh_job")
    assert {k for a in ticket_context for k in a.keys} <= set(job.asset_layer.executable_asset_keys)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), definitions=defs, resources=defs.resources
        ) as ctx:
            data = ticket_inbox_sensor.evaluate_tick(ctx)
        assert [r.job_name for r in data.run_requests] == ["ticket_context_refresh_job"]
        assert data.cursor is None  # no batch cut before the context exists


def test_without_sample_data_the_sensor_says_what_to_run_instead_of_bootstrapping(bosun_home, tmp_path):
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        data = _tick(instance, defs)
        assert data.run_requests == []
        assert "invoice_context_refresh_job" in data.skip_message and "bosun sample-data" in data.skip_message


def test_a_failed_bootstrap_is_not_retried_on_every_tick(bosun_home, tmp_path):
    from orchestration.definitions import build_definitions

    _write_policy_documents(bosun_home)
    defs = build_definitions()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = instance.create_run_for_job(
            job_def=defs.resolve_job_def("invoice_context_refresh_job"), status=dg.DagsterRunStatus.STARTED
        )
        instance.report_run_failed(run)
        data = _tick(instance, defs)
        assert data.run_requests == [] and f"run {run.run_id} failed" in data.skip_message


def test_batches_become_partitions_with_run_keys_and_the_cursor_advances(bosun_home, tmp_path, monkeypatch):
    from orchestration.definitions import build_definitions, payload_registry

    defs = build_definitions()
    inbox = defs.resources["bosun_db"].inbox()
    inbox.ingest([invoice_event(i) for i in range(2500)], payload_registry)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _materialize_context(instance, defs)
        data = _tick(instance, defs)
        keys = [r.run_key for r in data.run_requests]
        # A backlog of 2,500 spread over the runs allowed in flight: that many full batches.
        n = batch_policy.max_in_flight
        assert [BatchRange.parse(k).last - BatchRange.parse(k).first + 1 for k in keys] == [2500 // n] * n
        assert all(r.partition_key == r.run_key for r in data.run_requests)
        assert data.dynamic_partitions_requests[0].partition_keys == keys
        assert data.cursor == str(BatchRange.parse(keys[-1]).last)
        # The inbox in the lineage is observed at the cut: what went into batches, what is left.
        (observed,) = data.asset_events
        assert observed.asset_key == dg.AssetKey("invoice_inbox")
        assert observed.metadata["events_in_batches"].value == 2500 and observed.metadata["batches_cut"].value == n
        assert observed.metadata["cursor"].value == int(data.cursor)

        inbox.ingest([invoice_event(i) for i in range(2500, 2550)], payload_registry)
        again = _tick(instance, defs, cursor=data.cursor)
        # 50 more: under the minimum batch size and not yet waited for, so nothing is cut.
        assert again.run_requests == [] and "50 event(s) waiting" in again.skip_message


def _queue_batch_runs(instance, defs, n):
    job = defs.resolve_job_def("invoice_batch_job")
    for _ in range(n):
        instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)  # QUEUED needs a code origin


def test_backpressure_holds_batches_while_the_limit_is_in_flight(bosun_home, tmp_path):
    from orchestration.definitions import build_definitions, payload_registry

    defs = build_definitions()
    defs.resources["bosun_db"].inbox().ingest([invoice_event(i) for i in range(3000)], payload_registry)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _materialize_context(instance, defs)
        limit = batch_policy.max_in_flight
        _queue_batch_runs(instance, defs, limit - 1)
        data = _tick(instance, defs)
        assert len(data.run_requests) == 1  # one slot left
        # The one free slot takes the whole backlog (up to max_events), not a share sized for
        # slots that are busy: a run's start is paid once for all of it.
        assert data.run_requests[0].tags["bosun/batch_events"] == str(min(3000, batch_policy.max_events))
        _queue_batch_runs(instance, defs, 1)
        held = _tick(instance, defs, cursor=data.cursor)
        assert held.run_requests == [] and held.cursor in (None, data.cursor)  # nothing skipped over
        assert held.skip_message.startswith(
            f"backpressure: {limit} invoice_batch_job run(s) queued or running (limit {limit})"
        )


def test_the_deployment_s_batch_policy_cuts_the_batches(bosun_home, tmp_path, monkeypatch):
    """`BOSUN_INVOICES_BATCH_POLICY` resizes the batches the inbox sensor cuts, as the code
    server reads it when it loads the code location."""
    from assets.invoices.batch import steps
    from assets.invoices.jobs import invoice_batch_job, invoice_context_refresh_job
    from orchestration.definitions import build_definitions, payload_registry
    from sensors.workflow_triggers import inbox_sensor

    monkeypatch.setenv("BOSUN_INVOICES_BATCH_POLICY", '{"max_events": 400, "max_in_flight": 3}')
    sensor = inbox_sensor(steps, invoice_batch_job, batch_policy, invoice_context_refresh_job, context_assets)
    assert "up to 400 events" in sensor.description
    defs = build_definitions()
    defs.resources["bosun_db"].inbox().ingest([invoice_event(i) for i in range(2500)], payload_registry)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        _materialize_context(instance, defs)
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), definitions=defs, resources=defs.resources
        ) as ctx:
            data = sensor.evaluate_tick(ctx)
        # Three runs in flight allowed, each a batch of at most 400 (the declared policy: two of 1,250).
        assert [r.tags["bosun/batch_events"] for r in data.run_requests] == ["400"] * 3
