"""`bosun dev`: the local stack that `make run` starts.

Prepares the instance home and the sample data, starts `dagster dev` (webserver + daemon)
in its own process group, and feeds sample invoices into the inbox at a steady pace so
that sensor-driven batch runs show up in the UI within a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestration import settings

POSTGRES_STORAGE = """
# Added by `bosun dev` because DAGSTER_PG_URL is set: Dagster storage in Postgres.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""


def prepare_dagster_home(project_dir: Path) -> Path:
    """Project-local DAGSTER_HOME holding the project's dagster.yaml (Postgres if configured)."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_dir / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = (project_dir / "dagster.yaml").read_text()
    if os.environ.get("DAGSTER_PG_URL"):
        os.environ["DAGSTER_PG_URL"] = settings.normalise_url(os.environ["DAGSTER_PG_URL"])
        config += POSTGRES_STORAGE
    (home / "dagster.yaml").write_text(config)
    os.environ["DAGSTER_HOME"] = str(home)
    # Create the instance's tables before webserver and daemon start together: both
    # creating them at once on a fresh SQLite home fails ("table ... already exists").
    import dagster as dg

    with dg.DagsterInstance.get():
        pass
    return home


def feed(lines: list[str], per_tick: int, interval: float, stop, seed: int = 7) -> None:
    from assets.invoices.sample_settlements import simulate_settlements
    from orchestration.definitions import defs, notification_routings, payload_registry

    inbox = defs.resources["bosun_db"].inbox()
    outbox, workflows = defs.resources["outbox"], sorted(notification_routings)
    sink = defs.resources["outbox_email"]
    for i in range(0, len(lines), per_tick):
        if stop():
            return
        summary = inbox.ingest(lines[i:i + per_tick], payload_registry)
        # The sample bank reports what it has settled by now, so the daily
        # `payments_settled_by_due_date` check has a feed to read.
        settled = simulate_settlements(defs.resources["erp"], seed)
        print(f"[feeder] {summary.accepted} accepted, {summary.duplicates} duplicates, "
              f"{len(summary.rejected)} rejected; bank reports {settled['reports']}", flush=True)
        # The outbox_relay sensor sends what the batches queued (to the Maildir sink unless
        # BOSUN_SMTP_HOST is set); its passes are outbox_deliveries in the UI.
        where = "SMTP" if sink.host else f"sink {sink.sink_path}"
        print(f"[outbox] messages {outbox.delivery_figures(workflows)} ({where})", flush=True)
        time.sleep(interval)
    print("[feeder] sample exhausted; the UI keeps running (Ctrl-C to stop)", flush=True)
    while not stop():  # the bank keeps settling what the batches paid
        time.sleep(max(interval, 30.0))
        simulate_settlements(defs.resources["erp"], seed)


def start_serve(host: str, port: int) -> subprocess.Popen:
    """`bosun serve` beside the Dagster UI: the HTTP API and the reviewer console at /console.
    In this process's group, so a signal to `bosun dev`'s group reaches it too."""
    print(f"[bosun] reviewer console: http://{host}:{port}/console/ (sign in with a reviewer's key: "
          f"bosun apikey create --name 'YOUR NAME' --scopes reviews:read,reviews:write)", flush=True)
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--host", host, "--port", str(port)])


def stop_serve(serve: subprocess.Popen) -> None:
    if serve.poll() is None:
        serve.terminate()
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()


def run_dev(host: str, port: int, invoices: int, seed: int, feed_per_tick: int, feed_interval: float,
            api_port: int = 8080) -> int:
    project_dir = Path.cwd()
    if not (project_dir / "workspace.yaml").exists():
        print("bosun dev: run it from the project directory (where workspace.yaml is)", file=sys.stderr)
        return 2
    os.environ["BOSUN_HOME"] = str(settings.bosun_home())
    home = prepare_dagster_home(project_dir)
    from orchestration.definitions import defs

    res = defs.resources
    if not res["local_model"].exists("invoices") or not (settings.sample_dir() / "invoices.jsonl").exists():
        from assets.invoices.demo import prepare

        prepare(settings.sample_dir(), invoices, seed, res["erp"], res["local_model"])
    lines = [ln for ln in (settings.sample_dir() / "invoices.jsonl").read_text().splitlines() if ln.strip()]
    print(f"[bosun] DAGSTER_HOME={home}  BOSUN_HOME={settings.bosun_home()}  UI: http://{host}:{port}", flush=True)
    # Started from DAGSTER_HOME so dagster does not warn about the project's dagster.yaml,
    # whose copy in DAGSTER_HOME is the one it reads.
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", str(project_dir / "workspace.yaml"),
                             "-h", host, "-p", str(port)], cwd=home, start_new_session=True)
    serve = start_serve(host, api_port)
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        feed(lines, feed_per_tick, feed_interval, stop=lambda: stopping or proc.poll() is not None, seed=seed)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        # Shut down once: a second signal must not interrupt the shutdown itself.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_serve(serve)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
