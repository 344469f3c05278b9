"""The production process set of deploy/Procfile, started for real without containers: the code
server, the daemon, the webserver and two Celery workers, each the Procfile's own command line,
against fresh Postgres databases (Dagster's storage through deploy/dagster.yaml, Bosun's tables
and the ERP) and a broker (Redis, and RabbitMQ). The migrations run first as deploy/README.md
says (`bosun db upgrade`, `dagster instance migrate`), the sample's ERP and policies are written,
~50 sample invoices are ingested with `bosun ingest`, and the inbox sensor's batch run must
succeed with its steps executed by the Celery workers, every event terminal, nothing left on
the workers' own disks (BOSUN_HOME, TMPDIR), and the webserver answering. Then the kill: one of two workers SIGKILLed mid-batch, and every event still ends
terminal exactly once. Every process is stopped by its process group id, also on failure."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from bosun_testing import dagster_graphql, dagster_webserver_up, free_port, service_unavailable, stop_process_group

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("BOSUN_TEST_REDIS_URL", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("BOSUN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

BATCH_RUNS = """{ runsOrError(filter: {pipelineName: "invoice_batch_job"}, limit: 20) {
  ... on Runs { results { runId status tags { key value } } } } }"""
RUN_ENGINE_EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events {
  __typename ... on EngineEvent { message stepKey metadataEntries { label ... on TextMetadataEntry { text } } } } } } } }"""


def procfile() -> dict[str, str]:
    """deploy/Procfile's processes: name -> command line."""
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(ln.split(": ", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def _redis_broker() -> tuple[str, str]:
    """Broker and result backend on two empty Redis databases (tasks of other users of the same
    Redis must not reach this test's workers, nor the reverse)."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
        client.ping()
        free = [n for n in range(8, 16) if redis.Redis.from_url(f"{REDIS_URL}/{n}", socket_timeout=3).dbsize() == 0]
    except redis.RedisError as err:
        service_unavailable(f"Redis at {REDIS_URL}", err)
    if len(free) < 2:
        pytest.skip(f"no two empty Redis databases among 8-15 at {REDIS_URL}")
    return f"{REDIS_URL}/{free[0]}", f"{REDIS_URL}/{free[1]}"


def _amqp_broker() -> tuple[str, str]:
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            # Tasks a crashed earlier run left in the queue would reach these workers.
            conn.default_channel.queue_purge("dagster")
    except Exception as err:  # kombu raises the transport's own errors
        if "NOT_FOUND" not in str(err):
            service_unavailable(f"RabbitMQ at {AMQP_URL}", err)
    return AMQP_URL, "rpc://"


def _flush_redis(*urls: str) -> None:
    import redis

    for url in urls:
        if url.startswith("redis://"):
            redis.Redis.from_url(url).flushdb()


class ProcessSet:
    """Each process in its own session, its output in a log file, stopped by its group id."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: str, **extra_env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=REPO,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{self.tail(name)}"

    def tail(self, name: str, chars: int = 3000) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_process_group(proc, grace_s=20)


def _wait(what: str, condition, deadline: float, processes: ProcessSet, poll_s: float = 1.0):
    while True:
        processes.assert_alive()
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} before the deadline; logs in {processes.logs}"
        time.sleep(poll_s)


def _run(args: list[str], env: dict, what: str) -> str:
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def _celery_batch_run(port: int) -> dict | None:
    """A sensor-launched batch run that succeeded, with the steps the Celery workers executed."""
    runs = dagster_graphql(port, BATCH_RUNS)["runsOrError"]["results"]
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        if run["status"] != "SUCCESS" or tags.get("dagster/sensor_name") != "invoice_inbox_sensor":
            continue
        events = dagster_graphql(port, RUN_ENGINE_EVENTS, {"id": run["runId"]})["runOrError"]["eventConnection"]
        celery_steps = {
            e["stepKey"] for e in events["events"] if "in celery worker" in (e.get("message") or "") and e["stepKey"]
        }
        return {"run_id": run["runId"], "celery_steps": celery_steps, "runs": runs}
    failed = [r["runId"] for r in runs if r["status"] == "FAILURE"]
    assert not failed, f"batch run(s) failed: {failed}"
    return None


@dataclass
class Stack:
    env: dict
    processes: ProcessSet
    web_port: int
    pg_url: str
    invoices: Path
    started: float
    worker_disks: dict[str, Path]


@contextlib.contextmanager
def process_set(
    broker: str,
    tmp_path: Path,
    pg_url: str,
    dagster_pg_url: str,
    model_dir: Path,
    workers: int = 2,
    invoices: int = 50,
    **extra_env: str,
):
    """The migrations, the sample's ERP and policies, then the Procfile's processes with
    `workers` Celery workers (w1, w2, ...); stopped (and the broker's databases emptied) on exit,
    also on failure."""
    broker_url, backend_url = _redis_broker() if broker == "redis" else _amqp_broker()
    dagster_home, bosun_home, sample_dir, logs = (tmp_path / d for d in ("dagster_home", "bosun", "sample", "logs"))
    for d in (dagster_home, bosun_home, logs):
        d.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", dagster_home / "dagster.yaml")
    code_port, web_port = free_port(), free_port()

    # What an operator sets (deploy/README.md), nothing inherited from the developer's shell; the
    # checkout under test first on the import path (the venv may hold another editable install).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        DAGSTER_HOME=str(dagster_home),
        DAGSTER_PG_URL=dagster_pg_url,
        BOSUN_HOME=str(bosun_home),
        BOSUN_DATABASE_URL=pg_url,
        BOSUN_AUDIT_KEY=secrets.token_hex(32),
        BOSUN_MODEL_DIR=str(model_dir),
        BOSUN_SAMPLE_DIR=str(sample_dir),
        BOSUN_MAX_CONCURRENT_RUNS=str(max(2, workers)),
        BOSUN_RUN_EXECUTOR="celery",
        BOSUN_CELERY_BROKER_URL=broker_url,
        BOSUN_CELERY_BACKEND_URL=backend_url,
        BOSUN_CODE_SERVER_HOST="127.0.0.1",
        BOSUN_CODE_SERVER_PORT=str(code_port),
        BOSUN_WEBSERVER_HOST="127.0.0.1",
        BOSUN_WEBSERVER_PORT=str(web_port),
    )
    env.update(extra_env)
    started = time.monotonic()
    # The migrations, before any process starts (deploy/README.md, "Start order").
    _run([str(BIN / "bosun"), "db", "upgrade"], env, "bosun db upgrade")
    _run([str(BIN / "dagster"), "instance", "migrate"], env, "dagster instance migrate")
    # The sample's ERP master data and policy documents (the model is the session's trained one).
    from assets.invoices import sample_data
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp
    from orchestration.core.db import dispose

    paths = sample_data.write_sample_data(sample_dir, n_invoices=invoices, seed=11)
    seed_erp(ERPResource(url=pg_url), sample_dir)

    commands = procfile()
    assert set(commands) == {"codeserver", "webserver", "daemon", "worker"}
    processes = ProcessSet(env, logs)
    try:
        processes.start("codeserver", commands["codeserver"])
        # Each worker with a local disk of its own (BOSUN_HOME and TMPDIR), as on its own machine.
        worker_disks = {f"w{i}": tmp_path / f"disk_w{i}" for i in range(1, workers + 1)}
        for name, disk in worker_disks.items():
            (disk / "home").mkdir(parents=True)
            (disk / "tmp").mkdir()
            processes.start(
                name,
                commands["worker"],
                BOSUN_CELERY_WORKER_NAME=name,
                BOSUN_HOME=str(disk / "home"),
                TMPDIR=str(disk / "tmp"),
            )
        processes.start("daemon", commands["daemon"])
        processes.start("webserver", commands["webserver"])
        yield Stack(env, processes, web_port, pg_url, paths["invoices"], started, worker_disks)
    finally:
        processes.stop_all()
        _flush_redis(broker_url, backend_url)
        dispose(pg_url)


def _ingest(stack: Stack) -> dict:
    ingest = json.loads(_run([str(BIN / "bosun"), "ingest", str(stack.invoices)], stack.env, "bosun ingest"))
    assert ingest["accepted"] >= 50, ingest
    return ingest


def _all_terminal(stack: Stack, accepted: int):
    from orchestration.trigger.inbox import Inbox

    by_status = Inbox(stack.pg_url).counts()["by_status"]
    return "received" not in by_status and sum(by_status.values()) >= accepted and by_status


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_procfile_process_set_runs_a_sensor_batch_on_celery_workers(
    broker, tmp_path, pg_url, dagster_pg_url, trained_model_dir
):
    with process_set(broker, tmp_path, pg_url, dagster_pg_url, trained_model_dir) as stack:
        processes, deadline = stack.processes, stack.started + 240
        _wait("the webserver answers /server_info", lambda: dagster_webserver_up(stack.web_port), deadline, processes)
        ingest = _ingest(stack)
        by_status = _wait(
            "every ingested event reached a terminal state",
            lambda: _all_terminal(stack, ingest["accepted"]),
            deadline,
            processes,
        )
        found = _wait(
            "a sensor-launched batch run succeeded", lambda: _celery_batch_run(stack.web_port), deadline, processes
        )
        # The batch's steps ran on the Celery workers, handed over through the database.
        steps = found["celery_steps"]
        assert "invoice_context" in steps and any(s.startswith("invoice_actions") for s in steps), found
        assert dagster_webserver_up(stack.web_port)
        # Nothing of the batch stayed on a worker's local disk (its values went through Postgres).
        left = [p for disk in stack.worker_disks.values() for p in disk.rglob("*") if p.is_file()]
        assert not left, left
        processes.assert_alive()
        assert sum(by_status.values()) == ingest["accepted"], (by_status, ingest)
        took = time.monotonic() - stack.started
        print(f"[{broker}] terminal {by_status} in {took:.1f} s; runs {len(found['runs'])}")


def _worker_on_step(port: int, step_prefix: str) -> str | None:
    """The Celery node (e.g. `w1@host`) a running batch run handed the step to, once it did."""
    for run in dagster_graphql(port, BATCH_RUNS)["runsOrError"]["results"]:
        if run["status"] != "STARTED":
            continue
        events = dagster_graphql(port, RUN_ENGINE_EVENTS, {"id": run["runId"]})["runOrError"]["eventConnection"]
        for e in events["events"]:
            if f"Executing steps {step_prefix}" in (e.get("message") or ""):
                return next(m["text"] for m in e["metadataEntries"] if m["label"] == "Celery worker")
    return None


def _nodes_by_step(port: int, run_id: str) -> dict[str, str]:
    """step key -> the Celery node(s) that were handed it (comma-separated if more than one)."""
    events = dagster_graphql(port, RUN_ENGINE_EVENTS, {"id": run_id})["runOrError"]["eventConnection"]["events"]
    nodes: dict[str, list[str]] = {}
    for e in events:
        if "in celery worker" in (e.get("message") or ""):
            node = next((m["text"] for m in e["metadataEntries"] if m["label"] == "Celery worker"), "")
            nodes.setdefault(e["stepKey"], []).append(node)
    return {k: ",".join(v) for k, v in nodes.items()}


def _claimed(url: str) -> bool:
    import sqlalchemy as sa

    from orchestration.core.db import engine_for, inbox

    with engine_for(url).connect() as conn:
        return bool(conn.execute(sa.select(sa.func.count()).where(inbox.c.batch_id.is_not(None))).scalar())


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.timeout(480)
def test_a_worker_killed_mid_batch_leaves_every_event_terminal_exactly_once(
    tmp_path, pg_url, dagster_pg_url, trained_model_dir
):
    """Two workers sharing only Postgres and Redis; the one executing the batch's first step is
    SIGKILLed with its whole process group (a machine lost) once the batch has claimed its events.
    Its unacknowledged task goes back to Redis after the visibility timeout and the other worker
    runs it and the rest: the batch succeeds, every event has one outcome, nothing is paid twice,
    the audit chain verifies."""
    import sqlalchemy as sa

    from assets.invoices.erp import ERPResource
    from orchestration.audit.chain import AuditLog
    from orchestration.audit.key import key_from_secret
    from orchestration.core.db import audit_log, engine_for

    with process_set(
        "redis", tmp_path, pg_url, dagster_pg_url, trained_model_dir, BOSUN_CELERY_VISIBILITY_TIMEOUT_S="45"
    ) as stack:
        processes, deadline = stack.processes, stack.started + 360
        _wait("the webserver answers /server_info", lambda: dagster_webserver_up(stack.web_port), deadline, processes)
        ingest = _ingest(stack)
        # The batch's first step: the worker loads the code location (seconds), claims the
        # batch's events, then reads and assembles their context. Killed once the claim is in.
        node = _wait(
            "a worker took the batch's first step",
            lambda: _worker_on_step(stack.web_port, "invoice_context"),
            deadline,
            processes,
            poll_s=0.5,
        )
        _wait("the batch claimed its events", lambda: _claimed(pg_url), deadline, processes, poll_s=0.05)
        victim = node.split("@")[0]
        os.killpg(processes.procs[victim].pid, signal.SIGKILL)
        processes.procs.pop(victim).wait(timeout=30)
        killed_at = time.monotonic()
        by_status = _wait(
            "every ingested event reached a terminal state after the kill",
            lambda: _all_terminal(stack, ingest["accepted"]),
            deadline,
            processes,
        )
        found = _wait(
            "the batch run succeeded on the surviving worker",
            lambda: _celery_batch_run(stack.web_port),
            deadline,
            processes,
        )
        assert sum(by_status.values()) == ingest["accepted"], (by_status, ingest)
        # The survivor took over: it ran the killed step again (the claim held: the same batch
        # re-claims its own events), or, when the victim had just finished that step as the kill
        # landed (a 200-event context takes under a second once claimed), the steps that followed.
        survivor = "w2" if victim == "w1" else "w1"
        nodes = _nodes_by_step(stack.web_port, found["run_id"])
        assert f"{victim}@" in nodes["invoice_context"], nodes
        assert any(f"{survivor}@" in ran_on for ran_on in nodes.values()), nodes
        with engine_for(pg_url).connect() as conn:
            outcomes = conn.execute(
                sa.select(audit_log.c.subject, sa.func.count())
                .where(audit_log.c.kind == "outcome")
                .group_by(audit_log.c.subject)
            ).all()
        assert outcomes and all(n == 1 for _, n in outcomes), [o for o in outcomes if o[1] != 1]
        assert ERPResource(url=pg_url).invoices_paid_twice() == []
        verdict = AuditLog(pg_url, key_from_secret(stack.env["BOSUN_AUDIT_KEY"])).verify().as_dict()
        assert verdict["ok"], verdict
        print(
            f"killed {node} in the context step; terminal {by_status} {time.monotonic() - killed_at:.1f} s later;"
            f" outcomes {len(outcomes)}; steps -> workers {_nodes_by_step(stack.web_port, found['run_id'])}"
        )
