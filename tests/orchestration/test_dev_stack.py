"""`make run`'s stack for real: `bosun dev` starts webserver + daemon + feeder, and the
webserver's GraphQL endpoint shows a sensor-launched batch run that succeeded with every
asset check passed. Then what an operator sees, in a real browser (headless Chromium through
selenium): the global lineage with the workflow's layer groups from the inbox on, the batch
run's page with its checks passed, and the batch's link to the reviewer console.
Stopped by its own process group id, also on failure.

BOSUN_UI_SCREENSHOTS=DIR saves the pages as the README shows them (DIR/lineage.png,
DIR/run.png); else they go to the test's tmp_path, so the suite rewrites no file."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from bosun_testing import (
    chromium_driver,
    dagster_graphql,
    dagster_webserver_up,
    free_port,
    stop_process_group,
    wait_in_browser,
)

from orchestration.core.lineage import LAYERS

REPO = Path(__file__).resolve().parents[2]
BOSUN = Path(sys.executable).parent / "bosun"

RUNS = """{ runsOrError(filter: {pipelineName: "invoice_batch_job", statuses: [SUCCESS]}, limit: 20) {
  ... on Runs { results { runId tags { key value } } } } }"""
RUN_CHECKS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
  __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } } }"""
EXPECTED_CHECKS = {"every_event_reached_a_terminal_state", "no_invoice_paid_twice", "no_payment_exceeds_po"}


def _sensor_batch_with_checks_passed(port: int) -> tuple[str, set[str]] | None:
    """A sensor-launched batch run whose checks all passed: its id and the checks it ran."""
    for run in dagster_graphql(port, RUNS)["runsOrError"]["results"]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if tags.get("dagster/sensor_name") != "invoice_inbox_sensor":
            continue
        events = dagster_graphql(port, RUN_CHECKS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
        results = {
            e["evaluation"]["checkName"]: e["evaluation"]["success"]
            for e in events
            if e["__typename"] == "AssetCheckEvaluationEvent"
        }
        # Every check the batch job runs passed, the three outcome checks among them.
        if EXPECTED_CHECKS <= set(results) and all(results.values()):
            return run["runId"], set(results)
    return None


WORKFLOW_GROUPS = {f"invoices_{layer}" for layer in LAYERS}
ASSET_GRAPH = "{ assetNodes { assetKey { path } groupName hasAssetChecks dependencyKeys { path } } }"
# What the lineage graph draws, full names included: a label too long for its box is cut in
# the middle ("invoi…_verification") and kept whole in its tooltip.
GRAPH_LABELS = """return Array.from(document.querySelectorAll('svg foreignObject *')).flatMap(
    e => [e.getAttribute('data-tooltip'), e.children.length ? null : e.textContent]).filter(Boolean)"""
UI_TIMEOUT_S = 60


def _served_lineage_is_one_graph_from_the_inbox(port: int) -> None:
    """The asset graph the webserver serves (the edges the lineage page draws): the
    workflow's groups form one connected graph, and from the inbox every layer is reached."""
    nodes = dagster_graphql(port, ASSET_GRAPH)["assetNodes"]
    group = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    ups = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
    mine = {k for k, g in group.items() if g in WORKFLOW_GROUPS}
    assert {group[k] for k in mine} == WORKFLOW_GROUPS
    assert ups["invoice_inbox"] == set() and group["invoice_inbox"] == "invoices_trigger"
    downs: dict[str, set[str]] = {k: set() for k in ups}
    for k, deps in ups.items():
        for d in deps:
            downs.setdefault(d, set()).add(k)
    connected, todo = set(), ["invoice_inbox"]
    while todo:
        k = todo.pop()
        if k in connected or k not in mine:
            continue
        connected.add(k)
        todo += ups.get(k, set()) | downs.get(k, set())
    assert connected == mine, f"not connected to the inbox: {sorted(mine - connected)}"
    reached, todo = set(), ["invoice_inbox"]
    while todo:
        k = todo.pop()
        if k not in reached:
            reached.add(k)
            todo += downs.get(k, set())
    assert {group[k] for k in reached if k in mine} >= {f"invoices_{layer}" for layer in LAYERS[:5]}
    # Every shipped workflow is served beside it as its own asset groups, its batch checked.
    checked = {"/".join(n["assetKey"]["path"]) for n in nodes if n["hasAssetChecks"]}
    assert {f"tickets_{layer}" for layer in LAYERS[:5]} <= set(group.values())
    assert {"invoice_actions", "ticket_actions"} <= checked


def _wait(driver, condition, what: str):
    return wait_in_browser(driver, condition, what, UI_TIMEOUT_S)


def _browse_the_ui(ui: str, run_id: str, checks: set[str], console_link: str, shots: Path, profile: Path) -> None:
    from contextlib import ExitStack

    from selenium.webdriver.common.by import By

    def text(d) -> str:
        return d.find_element(By.TAG_NAME, "body").text

    with ExitStack() as stack:
        driver = chromium_driver(stack, profile, width=1600, height=1000)
        # Dagster asks for a newsletter sign-up in a dialog over the page on localhost; a
        # dismissal is remembered in the origin's localStorage.
        driver.get(f"{ui}/server_info")
        driver.execute_script("window.localStorage.setItem('communityNux', '1')")

        # The global lineage, the workflow's groups opened (`expanded` takes group ids,
        # `global@global:<group>` in 1.13): the layers and the inbox, drawn.
        expanded = ",".join(f"global@global:{g}" for g in sorted(WORKFLOW_GROUPS))
        driver.get(f"{ui}/asset-groups?expanded={expanded}")
        wanted = WORKFLOW_GROUPS | {"invoice_inbox", "invoice_context", "invoice_decisions", "invoice_actions"}
        _wait(
            driver,
            lambda d: wanted <= set(d.execute_script(GRAPH_LABELS)),
            f"the lineage graph draws {sorted(wanted)}",
        )
        assert "Global asset lineage" in text(driver)
        driver.save_screenshot(str(shots / "lineage.png"))

        # The batch run's page, its log filtered to the check evaluations: the run
        # succeeded and every check it ran says so.
        driver.set_window_size(1600, 2000)
        driver.get(f"{ui}/runs/{run_id}?logs=type:ASSET_CHECK_EVALUATION")
        _wait(
            driver,
            lambda d: all(f"Check {c} succeeded" in text(d) for c in checks),
            f"the run page shows {sorted(checks)} succeeded",
        )
        page = text(driver)
        assert "Success" in page and "invoice_batch_job" in page and "invoice_inbox_sensor" in page
        assert " failed for materialization" not in page
        # For the picture only: the log pane's own maximize button (the last expand icon)
        # hides the step timeline, so all of the checks fit on the page.
        for button in driver.find_elements(By.XPATH, "//button[.//*[@aria-label='expand_arrows']]")[-1:]:
            button.click()
            _wait(driver, lambda d: "Hide unselected steps" not in text(d), "the log pane fills the page")
        driver.save_screenshot(str(shots / "run.png"))

        # The same run's materializations: invoice_actions links to the reviewer console.
        driver.get(f"{ui}/runs/{run_id}?logs=type:ASSET_MATERIALIZATION")
        _wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, f'a[href="{console_link}"]'),
            f"the run page links to the reviewer console ({console_link})",
        )


# A bound on a hang, not a speed figure (speed is the benchmarks'): on an idle two-core machine
# the first batch passes its checks 23-28 s after the UI serves, 39-44 s beside three CPU hogs
# (2026-12-01, before and after that day's changes alike); the suite runs three workers on two
# cores, daemons and browsers among them, where a minute was missed three times in a row.
FIRST_BATCH_DEADLINE_S = 150


@pytest.mark.slow
def test_bosun_dev_runs_sensor_batches_with_checks_passed(tmp_path):
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}
    env.update(BOSUN_HOME=str(tmp_path / "bosun"), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    log = open(tmp_path / "dev.log", "w")
    proc = subprocess.Popen(
        [
            str(BOSUN),
            "dev",
            "--port",
            str(port),
            "--events",
            "300",
            "--feed-interval",
            "2",
            "--api-port",
            str(api_port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not dagster_webserver_up(port):
            assert proc.poll() is None, f"bosun dev exited early:\n{(tmp_path / 'dev.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "webserver did not answer within 120 s"
            time.sleep(1)
        served_at = time.monotonic()
        found = None
        while found is None and time.monotonic() - served_at < FIRST_BATCH_DEADLINE_S:
            time.sleep(2)
            found = _sensor_batch_with_checks_passed(port)
        assert found, (
            f"no sensor-launched batch run with its checks passed within {FIRST_BATCH_DEADLINE_S} s of the UI serving:\n"
            + (tmp_path / "dev.log").read_text()[-3000:]
        )
        run_id, checks = found
        # What an operator sees, in a real browser.
        _served_lineage_is_one_graph_from_the_inbox(port)
        shots = Path(os.environ.get("BOSUN_UI_SCREENSHOTS") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        console_link = f"http://127.0.0.1:{api_port}/console/?workflow=invoices"
        _browse_the_ui(f"http://127.0.0.1:{port}", run_id, checks, console_link, shots, tmp_path / "chromium")
        # The batches' vendor notices leave through the outbox relay into the Maildir sink.
        sink = tmp_path / "bosun" / "outbox" / "sent" / "new"
        sent_by = time.monotonic() + 90
        while not (sink.is_dir() and any(sink.iterdir())):
            assert time.monotonic() < sent_by, (
                "no notice left through the outbox relay within 90 s:\n" + (tmp_path / "dev.log").read_text()[-3000:]
            )
            time.sleep(2)
        assert "[outbox] messages" in (tmp_path / "dev.log").read_text()
        # `bosun serve` runs beside it: the batch's link leads to the console, which asks for a key.
        with urllib.request.urlopen(console_link, timeout=10) as resp:
            assert resp.status == 200 and resp.url.endswith("/console/sign-in") and b'id="api_key"' in resp.read()
    finally:
        stop_process_group(proc)
        log.close()


SENSOR_TICKS = """{ sensorOrError(sensorSelector: {repositoryLocationName: "bosun", repositoryName: "__repository__",
  sensorName: "invoice_inbox_sensor"}) { ... on Sensor { sensorState { ticks(limit: 5) { status skipReason } } } } }"""
ALL_RUNS = """{ runsOrError(limit: 50) { ... on Runs { results { runId jobName status } } } }"""
QUEUE = "{ instance { runQueueConfig { maxConcurrentRuns } } }"
NOT_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".bosun",
    ".dagster_home",
    ".tmp_dagster_home_*",
    ".env",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "tests",
    "benchmarks",
)


@pytest.mark.slow
def test_plain_dagster_dev_in_a_fresh_clone_without_sample_data_launches_no_failing_run(tmp_path):
    """What a Dagster user types first: `dagster dev` in the project root, no sample data, no
    DAGSTER_HOME. The repository's dagster.yaml applies, and the inbox sensor says what to run
    instead of launching a context refresh that can only fail."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=NOT_A_CLONE)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not dagster_webserver_up(port):
            assert proc.poll() is None, (
                "dagster dev exited early:\n" + (tmp_path / "dagster-dev.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "webserver did not answer within 180 s"
            time.sleep(1)
        assert dagster_graphql(port, QUEUE)["instance"]["runQueueConfig"]["maxConcurrentRuns"] == 3  # our dagster.yaml
        # Watch for 2 minutes after the sensor's first tick (what a user leaves it running for
        # before looking): the old behaviour launched (and failed) a context refresh every ~20 s.
        first_tick, reasons, failed = None, set(), []
        while first_tick is None or time.monotonic() - first_tick < 120:
            assert time.monotonic() < deadline + 150, "the inbox sensor never ticked"
            time.sleep(3)
            ticks = dagster_graphql(port, SENSOR_TICKS)["sensorOrError"]["sensorState"]["ticks"]
            reasons |= {t["skipReason"] for t in ticks if t["skipReason"]}
            if ticks and first_tick is None:
                first_tick = time.monotonic()
            runs = dagster_graphql(port, ALL_RUNS)["runsOrError"]["results"]
            failed = [r for r in runs if r["status"] == "FAILURE"]
            assert not failed, f"failing runs: {failed}"
        # No batch and no invoice refresh (its policy documents come with the sample); a workflow
        # whose context needs no sample (the tickets' shipped articles) may refresh it, and it succeeds.
        assert {r["jobName"] for r in runs} <= {"ticket_context_refresh_job"}, f"runs were launched: {runs}"
        assert all(r["status"] in ("SUCCESS", "STARTED", "STARTING", "QUEUED") for r in runs), runs
        assert any("bosun sample-data" in r for r in reasons), reasons
    finally:
        stop_process_group(proc)
        log.close()
