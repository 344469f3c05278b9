"""`bosun dev`: the local stack that `make run` starts.

Prepares the instance home and the sample data, starts `dagster dev` (webserver + daemon)
in its own process group, and feeds new events into the inbox at a steady pace for as
long as it runs, so sensor-driven batch runs keep showing up in the UI.

The feed is a living stream: every tick is a new chunk of seeded events dated by the
clock (the workflow's `live_feed.feed_chunk`), with the sample's shares of edge cases,
re-deliveries and malformed input. The next chunk number is kept in
`BOSUN_HOME/live_feed.json` and taken before the chunk is fed, so a second `make run`
continues the stream with new ids instead of meeting only duplicates.

It also writes `.env` (DAGSTER_HOME=<project>/.dagster_home) beside workspace.yaml unless
one already names DAGSTER_HOME: Dagster reads that file, so a plain `dagster dev` from the
project directory then uses the same persistent instance and the project's dagster.yaml.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestration import DAGSTER_WARNINGS_TO_IGNORE
from orchestration.core import settings

POSTGRES_STORAGE = """
# Added by `bosun dev` because DAGSTER_PG_URL is set: Dagster storage in Postgres.
storage:
  postgres:
    postgres_url:
      env: DAGSTER_PG_URL
"""
FEED_STATE = "live_feed.json"


def prepare_dagster_home(project_dir: Path) -> Path:
    """Project-local DAGSTER_HOME reading the project's dagster.yaml (a link to it; a copy
    with the Postgres storage block when DAGSTER_PG_URL is set), and `.env` pointing plain
    `dagster dev` at it."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_dir / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if target.is_symlink() or target.exists():
        target.unlink()
    if os.environ.get("DAGSTER_PG_URL"):
        os.environ["DAGSTER_PG_URL"] = settings.normalise_url(os.environ["DAGSTER_PG_URL"])
        target.write_text((project_dir / "dagster.yaml").read_text() + POSTGRES_STORAGE)
    else:
        target.symlink_to(project_dir / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    if home == (project_dir / ".dagster_home").resolve():  # the project's own instance, not a test's
        write_dotenv(project_dir, home)
    # Create the instance's tables before webserver and daemon start together: both
    # creating them at once on a fresh SQLite home fails ("table ... already exists").
    import dagster as dg

    with dg.DagsterInstance.get():
        pass
    return home


def write_dotenv(project_dir: Path, home: Path) -> bool:
    """Add DAGSTER_HOME to the project's `.env` (Dagster loads it in the directory
    `dagster dev` runs from) unless the file already sets it. True when written."""
    path = project_dir / ".env"
    lines = path.read_text().splitlines() if path.exists() else []
    if any(line.strip().startswith(("DAGSTER_HOME=", "export DAGSTER_HOME=")) for line in lines):
        return False
    lines += [
        "# Written by `bosun dev`: plain `dagster dev` from here uses this persistent instance.",
        f"DAGSTER_HOME={home}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return True


def reserve_chunk(bosun_home: Path) -> int:
    """The next chunk number of the live stream, saved before the chunk is fed (under a
    file lock, so two feeders never take the same one): ids never repeat across runs."""
    bosun_home.mkdir(parents=True, exist_ok=True)
    with open(bosun_home / FEED_STATE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read()
        chunk = int(json.loads(text)["next_chunk"]) if text.strip() else 1
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"next_chunk": chunk + 1}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return chunk


def feed(per_tick: int, interval: float, stop, seed: int = 7, workflows_to_feed=()) -> None:
    from orchestration.definitions import defs, notification_routings, payload_registry

    outbox, workflows = defs.resources["outbox"], sorted(notification_routings)
    sink = defs.resources["outbox_email"]
    feeders = [wf for wf in workflows_to_feed if wf.sample and wf.sample.feed_chunk]
    while not stop():
        chunk = reserve_chunk(settings.bosun_home())
        for wf in feeders:
            out = wf.sample.feed_chunk(defs.resources, payload_registry, settings.sample_dir(), chunk, per_tick, seed)
            # Whatever else the workflow's feeder reports (e.g. the sample bank's settlements).
            extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in out.items() if k not in _FEED_COUNTS)
            print(
                f"[feeder] {wf.name} chunk {out['chunk']}: {out['accepted']} accepted, {out['duplicates']} "
                f"duplicates, {out['rejected']} rejected" + (f"; {extra}" if extra else ""),
                flush=True,
            )
        # The outbox_relay sensor sends what the batches queued (to the Maildir sink unless
        # BOSUN_SMTP_HOST is set); its passes are outbox_deliveries in the UI.
        where = "SMTP" if sink.host else f"sink {sink.sink_path}"
        print(f"[outbox] messages {outbox.delivery_figures(workflows)} ({where})", flush=True)
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and not stop():
            time.sleep(min(0.5, interval))


def console_url(host: str, port: int) -> str:
    """Where the reviewer console of `bosun serve --host HOST --port PORT` answers. A wildcard
    bind is reached through the loopback address on this machine."""
    reach = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{reach}:{port}/console"


def start_serve(host: str, port: int) -> subprocess.Popen:
    """`bosun serve` beside the Dagster UI: the HTTP API and the reviewer console at /console.
    In this process's group, so a signal to `bosun dev`'s group reaches it too."""
    print(
        f"[bosun] reviewer console: {console_url(host, port)}/ (sign in with a reviewer's key: "
        f"bosun apikey create --name 'YOUR NAME' --scopes reviews:read,reviews:write)",
        flush=True,
    )
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--host", host, "--port", str(port)])


def stop_serve(serve: subprocess.Popen) -> None:
    if serve.poll() is None:
        serve.terminate()
        try:
            serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()


_FEED_COUNTS = ("chunk", "accepted", "duplicates", "rejected")


def run_dev(
    host: str,
    port: int,
    events: int,
    seed: int,
    feed_per_tick: int,
    feed_interval: float,
    api_port: int = 8080,
    workflow: str | None = None,
) -> int:
    from orchestration.cli.common import fail, progress, step

    project_dir = Path.cwd()
    if not (project_dir / "workspace.yaml").exists():
        return fail("dev: run it from the project directory (where workspace.yaml is)", 2)
    os.environ["BOSUN_HOME"] = str(settings.bosun_home())
    with step("Preparing the Dagster instance"):
        home = prepare_dagster_home(project_dir)
    with step("Loading the code location"):
        from orchestration.definitions import defs, workflows
    from orchestration.core.workflows import select_with_sample

    try:
        sampled = select_with_sample(workflows, workflow, "bosun dev")
    except KeyError as err:
        return fail(f"dev: {err.args[0]}", 2)
    res = defs.resources
    # The sample is written only when missing: a second `make run` keeps the model and the targets.
    for wf in sampled:
        if not wf.sample.prepared(res, settings.sample_dir()):
            with progress() as bar:
                wf.sample.prepare(res, settings.sample_dir(), events, seed, progress=bar)
    print(f"[bosun] DAGSTER_HOME={home}  BOSUN_HOME={settings.bosun_home()}  UI: http://{host}:{port}", flush=True)
    # The batches link their escalations to the console `bosun serve` runs below, unless the
    # reviewers reach it elsewhere (a proxy's address, set by whoever starts the stack).
    os.environ.setdefault("BOSUN_CONSOLE_URL", console_url(host, api_port))
    env = {**os.environ, "PYTHONWARNINGS": ",".join(f"ignore:{m}" for m in DAGSTER_WARNINGS_TO_IGNORE)}
    # Started from DAGSTER_HOME so dagster does not warn about the project's dagster.yaml,
    # which DAGSTER_HOME links to.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(project_dir / "workspace.yaml"),
            "-h",
            host,
            "-p",
            str(port),
        ],
        cwd=home,
        env=env,
        start_new_session=True,
    )
    serve = start_serve(host, api_port)
    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        feed(
            feed_per_tick,
            feed_interval,
            stop=lambda: stopping or proc.poll() is not None,
            seed=seed,
            workflows_to_feed=sampled,
        )
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
                proc.wait()
