"""`make run`'s stack for real: `bosun dev` starts webserver + daemon + feeder, and the
webserver's GraphQL endpoint shows a sensor-launched batch run that succeeded with every
asset check passed. Stopped by its own process group id, also on failure."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from bosun_testing import service_unavailable

REPO = Path(__file__).resolve().parents[2]
BOSUN = Path(sys.executable).parent / "bosun"

RUNS = """{ runsOrError(filter: {pipelineName: "invoice_batch_job", statuses: [SUCCESS]}, limit: 20) {
  ... on Runs { results { runId tags { key value } } } } }"""
RUN_CHECKS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
  __typename ... on AssetCheckEvaluationEvent { evaluation { checkName success } } } } } } }"""
EXPECTED_CHECKS = {"every_event_reached_a_terminal_state", "no_invoice_paid_twice", "no_payment_exceeds_po"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        method="POST",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["data"]


def _server_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
            return True
    except OSError:
        return False


def _sensor_batch_with_checks_passed(port: int) -> str | None:
    for run in _graphql(port, RUNS)["runsOrError"]["results"]:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if tags.get("dagster/sensor_name") != "invoice_inbox_sensor":
            continue
        events = _graphql(port, RUN_CHECKS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
        results = {
            e["evaluation"]["checkName"]: e["evaluation"]["success"]
            for e in events
            if e["__typename"] == "AssetCheckEvaluationEvent"
        }
        # Every check the batch job runs passed, the three outcome checks among them.
        if EXPECTED_CHECKS <= set(results) and all(results.values()):
            return run["runId"]
    return None


def _render(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        service_unavailable("Chromium (apt-get install chromium)", FileNotFoundError("chromium"))
    # Flags as this machine needs them: no sandbox as root, no background network calls.
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout


@pytest.mark.slow
def test_bosun_dev_runs_sensor_batches_with_checks_passed_within_a_minute(tmp_path):
    port, api_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}
    env.update(BOSUN_HOME=str(tmp_path / "bosun"), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    log = open(tmp_path / "dev.log", "w")
    proc = subprocess.Popen(
        [
            str(BOSUN),
            "dev",
            "--port",
            str(port),
            "--invoices",
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
        while not _server_up(port):
            assert proc.poll() is None, f"bosun dev exited early:\n{(tmp_path / 'dev.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "webserver did not answer within 120 s"
            time.sleep(1)
        served_at = time.monotonic()
        run_id = None
        while run_id is None and time.monotonic() - served_at < 60:
            time.sleep(2)
            run_id = _sensor_batch_with_checks_passed(port)
        assert run_id, (
            "no sensor-launched batch run with its checks passed within 60 s of the UI serving:\n"
            + (tmp_path / "dev.log").read_text()[-3000:]
        )
        # What an operator sees: the run's page, rendered by a real browser.
        dom = _render(f"http://127.0.0.1:{port}/runs/{run_id}", tmp_path)
        assert "RUN_SUCCESS" in dom and "invoice_batch_job" in dom
        assert all(name in dom for name in EXPECTED_CHECKS)
        # The batches' vendor notices leave through the outbox relay into the Maildir sink.
        sink = tmp_path / "bosun" / "outbox" / "sent" / "new"
        sent_by = time.monotonic() + 90
        while not (sink.is_dir() and any(sink.iterdir())):
            assert time.monotonic() < sent_by, (
                "no notice left through the outbox relay within 90 s:\n" + (tmp_path / "dev.log").read_text()[-3000:]
            )
            time.sleep(2)
        assert "[outbox] messages" in (tmp_path / "dev.log").read_text()
        # `bosun serve` runs beside it: the reviewer console asks for a key.
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/console/sign-in", timeout=10) as resp:
            assert resp.status == 200 and b'id="api_key"' in resp.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
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
    port = _free_port()
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
        while not _server_up(port):
            assert proc.poll() is None, (
                "dagster dev exited early:\n" + (tmp_path / "dagster-dev.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "webserver did not answer within 180 s"
            time.sleep(1)
        assert _graphql(port, QUEUE)["instance"]["runQueueConfig"]["maxConcurrentRuns"] == 3  # our dagster.yaml
        # Watch for 75 s after the sensor's first tick: long enough for the old behaviour to
        # launch (and fail) a context refresh twice.
        first_tick, reasons, failed = None, set(), []
        while first_tick is None or time.monotonic() - first_tick < 75:
            assert time.monotonic() < deadline + 150, "the inbox sensor never ticked"
            time.sleep(3)
            ticks = _graphql(port, SENSOR_TICKS)["sensorOrError"]["sensorState"]["ticks"]
            reasons |= {t["skipReason"] for t in ticks if t["skipReason"]}
            if ticks and first_tick is None:
                first_tick = time.monotonic()
            runs = _graphql(port, ALL_RUNS)["runsOrError"]["results"]
            failed = [r for r in runs if r["status"] == "FAILURE"]
            assert not failed, f"failing runs: {failed}"
        assert runs == [], f"runs were launched: {runs}"
        assert any("bosun sample-data" in r for r in reasons), reasons
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
