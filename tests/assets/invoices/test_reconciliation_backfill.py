"""A backfill of the daily reconciliation, as the Dagster UI launches it, over days the
workflow really paid on.

The stack: a Bosun home whose ERP was filled by the invoice workflow itself (sample invoices
through the in-process batch runner, half of them with the clock at yesterday noon in Berlin,
half today), and `dagster dev` on the same Dagster home. The backfill is created through the
webserver's GraphQL API with `launchPartitionBackfill`, the mutation the UI's "Materialize"
dialog sends, and executed by the daemon's backfill loop: the same path as an operator's.
Dagster has no public Python API for creating a backfill (`DagsterGraphQLClient` has no
backfill method; `instance.add_backfill` and `PartitionBackfill` are internal), and launching
one run per partition (`materialize(..., partition_key=...)`) would skip exactly what is under
test here: which partitions exist for the webserver and the daemon today.
"""

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as day_time
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
from bosun_testing import dagster_graphql, dagster_webserver_up, free_port, stop_process_group

from assets.invoices.erp import payments
from orchestration.core import clock
from orchestration.trigger.sample_events import read_events

pytestmark = [pytest.mark.clock, pytest.mark.slow]  # CI runs this module again with the clock a year ahead

REPO = Path(__file__).resolve().parents[3]
TESTS = REPO / "tests"
BERLIN = ZoneInfo("Europe/Berlin")

LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
BACKFILL = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename ... on PartitionBackfill { status } ... on PythonError { message } } }"""
BACKFILL_RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status tags { key value } } } } }"""
RUN_EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
  __typename
  ... on MaterializationEvent { partition metadataEntries { label ... on IntMetadataEntry { intValue } } }
  ... on AssetCheckEvaluationEvent { evaluation { checkName success severity description partition } }
} } } } }"""
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _clock_from(moment: datetime):
    """A clock that starts at `moment` and ticks (leases, rate limits and timeouts keep working)."""
    offset = datetime.now(timezone.utc) - moment
    return lambda: datetime.now(timezone.utc) - offset


def _run_batches(world, raw_events: list[dict]) -> None:
    from orchestration.definitions import payload_registry

    world.resources["bosun_db"].inbox().ingest(raw_events, payload_registry)
    report = world.run_pending()
    assert report.batches and not report.failed, report


def _stack_env(home: Path, dagster_home: Path) -> dict:
    """`dagster dev`'s environment: this Bosun home, nothing else of the developer's. Under the
    suite's clock-ahead run every process of the stack travels with the test (see
    tests/clock_ahead/sitecustomize.py), so Dagster's today is the test's today."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}
    env.update(
        BOSUN_HOME=str(home),
        BOSUN_MODEL_DIR=os.environ["BOSUN_MODEL_DIR"],
        BOSUN_SAMPLE_DIR=os.environ["BOSUN_SAMPLE_DIR"],
        DAGSTER_HOME=str(dagster_home),
    )
    shift_days = os.environ.get(clock.SHIFT_ENV)
    if shift_days:
        env["BOSUN_TEST_CLOCK_OFFSET_S"] = str(float(shift_days) * 86400)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS / "clock_ahead"), env.get("PYTHONPATH")]))
    return env


def _backfill(port: int, days: list[str]) -> list[dict]:
    """Launch the backfill as the UI does, wait for the daemon to finish it, and return its runs."""
    launched = dagster_graphql(
        port,
        LAUNCH,
        {
            "p": {
                "partitionNames": days,
                "assetSelection": [{"path": ["payment_reconciliation"]}],
                "title": "reconcile the days with payments",
            }
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    deadline = time.monotonic() + 300
    while True:
        state = dagster_graphql(port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if state["status"] in FINISHED:
            break
        assert time.monotonic() < deadline, f"backfill still {state['status']} after 300 s"
        time.sleep(2)
    assert state["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, state
    return dagster_graphql(port, BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]


def _by_day(port: int, runs: list[dict]) -> dict[str, dict]:
    """Per backfilled day: the materialization's counts and the check's verdict."""
    days = {}
    for run in runs:
        assert run["status"] == "SUCCESS", run
        events = dagster_graphql(port, RUN_EVENTS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
        (materialized,) = [e for e in events if e["__typename"] == "MaterializationEvent"]
        (check,) = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
        counts = {m["label"]: m.get("intValue") for m in materialized["metadataEntries"]}
        days[materialized["partition"]] = {**counts, "check": check}
    return days


def test_a_backfill_of_yesterday_and_today_reconciles_the_workflows_payments(
    world_maker, model_home, tmp_path, monkeypatch
):
    today = clock.now().astimezone(BERLIN).date()
    yesterday, quiet_day = today - timedelta(days=1), today - timedelta(days=2)
    # Today's batches run no later than 23:00 in Berlin, so they cannot spill into tomorrow
    # (a partition that does not exist yet) when the test runs around midnight.
    todays_run_at = min(clock.now(), datetime.combine(today, day_time(23), BERLIN))

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # as `bosun dev` does
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    with dg.DagsterInstance.get() as instance:
        with clock.use(_clock_from(datetime.combine(yesterday, day_time(12), BERLIN))):
            world = world_maker(instance, 160, 23)
            events = read_events(world.sample / "invoices.jsonl")
            _run_batches(world, events[: len(events) // 2])
        with clock.use(_clock_from(todays_run_at)):
            _run_batches(world, events[len(events) // 2 :])
    with world.resources["erp"].engine.connect() as conn:
        paid = conn.execute(
            sa.select(sa.func.count(sa.distinct(payments.c.invoice_id))).where(payments.c.status == "scheduled")
        ).scalar_one()

    port = free_port()
    log_path = tmp_path / "dagster-dev.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=_stack_env(model_home, dagster_home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while not dagster_webserver_up(port):
                assert proc.poll() is None, f"dagster dev exited early:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, (
                    f"webserver did not answer within 180 s:\n{log_path.read_text()[-3000:]}"
                )
                time.sleep(1)
            keys = [d.isoformat() for d in (quiet_day, yesterday, today)]
            days = _by_day(port, _backfill(port, keys))
        finally:
            stop_process_group(proc)

    assert set(days) == set(keys)
    for day in (yesterday, today):
        result = days[day.isoformat()]
        assert result["ledger_entries"] > 0 and result["payments"] > 0, (day, result)
        assert result["check"]["success"], (day, result)
    # The two days hold every payment the workflow made, none lost across midnight.
    assert days[yesterday.isoformat()]["payments"] + days[today.isoformat()]["payments"] == paid
    quiet = days[quiet_day.isoformat()]
    assert quiet["ledger_entries"] == 0 and quiet["payments"] == 0
    assert not quiet["check"]["success"] and quiet["check"]["severity"] == "WARN"
    assert quiet["check"]["description"].startswith("no data")
