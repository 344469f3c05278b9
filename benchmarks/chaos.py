"""Chaos: the daemon path under kills, with no operator step, judged against an oracle.

    python benchmarks/chaos.py --events 5000 --storage sqlite|postgres [--seed 11]
        [--worker-kills 2] [--daemon-kills 1] [--timeout 1800] [--model-dir DIR]

1. A sample stream of at least N invoice events (the generator's resubmitted invoices and
   re-deliveries, plus late (older) versions of invoices under new ids and malformed lines),
   the ERP seeded with its vendors and POs, a trained local model.
2. The oracle and the baseline: the same stream through the in-process runner (one process,
   no daemon, no fault; `orchestration/trigger/runner.py`): which invoice is paid with which amount,
   and how many dead letters it leaves.
3. The chaos run: `dagster-daemon run` with the repository's dagster.yaml (Dagster storage in
   SQLite, or in Postgres with Bosun's tables), the stream fed into the inbox, and the inbox
   sensor launching queued batch runs. Run workers are SIGKILLed mid-batch (while their sagas
   execute) `--worker-kills` times, the whole daemon (its process group: code server and run
   workers too) `--daemon-kills` times and restarted as a supervisor would, and on Postgres the
   database is restarted once (`pg_ctl restart -m immediate`). Postgres is a private cluster
   (initdb + pg_ctl on a free port under a temp dir), never the machine's shared one.
4. It ends when every event is terminal; then: nothing paid or posted twice, live ledger
   entries = live payments = the oracle, the audit chain verifies, and the dead letters are
   only real failures (as many as the oracle's, none a business refusal or a recovery that gave up).

Prints JSON figures: events/s of the chaos run and of the baseline, and the time from the
last kill to the last event terminal. Exit 1 if an acceptance condition fails.
Functions here are reused by tests/orchestration/test_chaos.py at a bounded size.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # bosun_testing: the suite's helpers (free_port)

from bosun_testing import free_port  # noqa: E402  (one way to take a port, below the ephemeral range)

BIN = Path(sys.executable).parent
_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


# ---- the stream -------------------------------------------------------------------------


def make_stream(sample_invoices: Path, seed: int, late_rate: float = 0.02, malformed_rate: float = 0.01) -> dict:
    """The sample's lines plus late (older) versions and malformed lines, as JSONL lines."""
    rng = random.Random(seed)
    events = [json.loads(ln) for ln in sample_invoices.read_text().splitlines() if ln.strip()]
    lines, late, bad = [], 0, 0
    pending_late: dict[int, list[dict]] = {}
    for i, ev in enumerate(events):
        lines.append(json.dumps(ev))
        for old in pending_late.pop(i, ()):
            lines.append(json.dumps(old))
        if rng.random() < late_rate:
            # The same invoice under a new id, an hour older than the original, arriving
            # 20-200 events later: stale if the original was triaged first, else the
            # original is then refused as already paid. Either way it is paid once.
            old = copy.deepcopy(ev)
            old["id"] = f"{ev['id']}-late"
            old["occurred_at"] = (datetime.fromisoformat(ev["occurred_at"]) - timedelta(hours=1)).isoformat()
            pending_late.setdefault(min(len(events) - 1, i + rng.randint(20, 200)), []).append(old)
            late += 1
        if rng.random() < malformed_rate:
            bad += 1
            lines.append(
                rng.choice(
                    [
                        '{"source": "erp", "id": ',
                        "not json at all",
                        json.dumps({**ev, "id": f"{ev['id']}-bad", "payload": {"amount": "x"}}),
                        json.dumps({"source": "erp", "type": "invoice.received"}),
                    ]
                )
            )
    for rest in pending_late.values():
        lines += [json.dumps(o) for o in rest]
    return {"lines": lines, "sample_events": len(events), "late_versions": late, "malformed": bad}


# ---- a private PostgreSQL cluster ---------------------------------------------------------


def postgres_binaries() -> Path | None:
    """The newest PostgreSQL server's bin directory (initdb, pg_ctl), or None without one."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(bins[-1]).parent if bins else None


class PrivatePostgres:
    """initdb + pg_ctl under `base` on a free port, run as the `postgres` OS user (we are root);
    restarted and stopped by its own pg_ctl, never touching the machine's cluster."""

    def __init__(self):
        found = postgres_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = found
        # A directory of its own the postgres user can reach (a root-only parent would not do).
        self.dir, self.port = Path(tempfile.mkdtemp(prefix="bosun-chaos-pg-")), free_port()
        self.dir.chmod(0o755)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(["initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"])
        self.start()

    def _run(self, cmd: list[str]) -> None:
        full = [str(self.bin / cmd[0]), *cmd[1:]]
        if self._as_postgres:
            full = ["runuser", "-u", "postgres", "--", *full]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {proc.stderr[-2000:]}")

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.dir / "data"),
                "-l",
                str(self.dir / "server.log"),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                *args,
            ]
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """A crash-like restart: every connection is cut, the server recovers from its WAL."""
        self._ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        except RuntimeError:
            pass

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def create(self, db: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        engine.dispose()
        return self.url(db)


# ---- reading the outcome ------------------------------------------------------------------


def paid_state(url: str) -> dict:
    """Live ledger entries and payments per invoice (vendor/invoice -> amounts), all rows per invoice."""
    import sqlalchemy as sa

    from assets.invoices.erp import ERPResource, ledger_entries, payments

    erp = ERPResource(url=url)
    out = {}
    with erp.engine.connect() as conn:
        for name, table, live in (("ledger", ledger_entries, "posted"), ("payments", payments, "scheduled")):
            rows = conn.execute(
                sa.select(table.c.vendor_id, table.c.invoice_id, table.c.amount).where(table.c.status == live)
            ).all()
            per: dict[str, list[str]] = {}
            for v, inv, amount in rows:
                per.setdefault(f"{v}/{inv}", []).append(str(Decimal(str(amount)).quantize(Decimal("0.01"))))
            out[name] = per
        out["twice"] = erp.invoices_paid_twice()
    return out


def outcome_summary(url: str, home: Path | None = None) -> dict:
    """The end state in `url`; `home`: the BOSUN_HOME whose audit key the chain was written
    with (default: this process's)."""
    from orchestration.audit.chain import AuditLog
    from orchestration.audit.key import current_key, key_from_secret
    from orchestration.trigger.dead_letters import DeadLetters
    from orchestration.trigger.inbox import Inbox

    key_path = (home / "audit.key") if home else None
    key = key_from_secret(key_path.read_text().strip(), str(key_path)) if key_path and key_path.exists() else None
    key = key or current_key()
    counts = Inbox(url).counts()
    letters = DeadLetters(url).list(status=None, limit=100_000)
    return {
        "status": counts["by_status"],
        "events": counts["received"],
        "dead_letters": [{"event": d["event_key"], "error": d["error"], "attempts": d["attempts"]} for d in letters],
        "audit": AuditLog(url, key).verify().as_dict(),
        "audit_kinds": AuditLog(url, key).count_by_kind(),
        **paid_state(url),
    }


# ---- step 1 and 2: sample and reference (each in a subprocess with its own environment) -----


def _prepare(sample_dir: str, n: int, seed: int, model_dir: str, train: bool) -> None:
    """The sample (policies, ERP master data, events) and, unless given one, a trained model."""
    from assets.invoices import sample_data
    from assets.invoices.demo import prepare
    from assets.invoices.erp import ERPResource
    from resources.local_model import LocalModel

    if not train:
        sample_data.write_sample_data(sample_dir, n_invoices=n, seed=seed)
        return
    scratch = ERPResource(url=f"sqlite:///{Path(sample_dir).parent / 'prepare-erp.db'}")
    prepare(Path(sample_dir), n, seed, scratch, LocalModel(model_dir=model_dir))


def _reference(stream: str, out: str) -> None:
    """The stream through the in-process runner on the process's BOSUN_DATABASE_URL."""
    import dagster as dg

    from assets.invoices import context_assets
    from assets.invoices.training import seed_erp
    from assets.invoices.workflow import EVENT_TYPES, batch_policy, invoice_batches
    from orchestration.core import settings
    from orchestration.definitions import defs, payload_registry
    from orchestration.trigger.runner import INSTANCE_OVERRIDES, QUIET, run_pending_batches

    res = defs.resources
    seed_erp(res["erp"], settings.sample_dir())
    lines = Path(stream).read_text().splitlines()
    started = time.perf_counter()
    inbox = res["bosun_db"].inbox()
    inbox.ingest(lines, payload_registry)
    (settings.bosun_home() / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.local_temp(
        tempdir=str(settings.bosun_home() / "dagster"), overrides=INSTANCE_OVERRIDES
    ) as instance:
        dg.materialize(context_assets, instance=instance, resources=res, run_config=QUIET)
        report = run_pending_batches(
            defs, "invoice_batch_job", invoice_batches, EVENT_TYPES, inbox, instance, batch_policy
        )
    took = time.perf_counter() - started
    Path(out).write_text(
        json.dumps(
            {"seconds": took, "failed_batches": report.failed, **outcome_summary(settings.database_url())}, default=str
        )
    )


def _start(mode: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(
            [sys.executable, __file__, *mode],
            env=env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> None:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"{proc.args[2]} failed:\n{log.read_text()[-3000:]}")


def _subprocess(mode: list[str], env: dict, log: Path, timeout: float) -> None:
    _finish(_start(mode, env, log), log, timeout)


def base_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BOSUN_", "OPENAI_", "DAGSTER_"))}


# ---- step 3: the chaos run ------------------------------------------------------------------


@dataclass
class ChaosReport:
    kills: list[dict] = field(default_factory=list)
    daemon_starts: int = 0
    daemon_exits: int = 0
    fed_at: float = 0.0
    terminal_at: float | None = None
    runs: dict = field(default_factory=dict)


class ChaosRun:
    """The daemon path on one storage, with the kills, until every event is terminal."""

    def __init__(self, base: Path, storage: str, sample_dir: Path, model_dir: Path):
        self.base, self.storage = base, storage
        self.home, self.dagster_home = base / "bosun", base / "dagster_home"
        self.home.mkdir(parents=True)
        self.dagster_home.mkdir(parents=True)
        self.pg: PrivatePostgres | None = None
        self.env = base_env()
        self.env.update(
            BOSUN_HOME=str(self.home),
            BOSUN_SAMPLE_DIR=str(sample_dir),
            BOSUN_MODEL_DIR=str(model_dir),
            DAGSTER_HOME=str(self.dagster_home),
            PYTHONPATH=str(REPO),
        )
        config = (REPO / "dagster.yaml").read_text()
        if storage == "postgres":
            self.pg = PrivatePostgres()
            self.url = self.pg.create("bosun")
            self.env.update(BOSUN_DATABASE_URL=self.url, DAGSTER_PG_URL=self.pg.create("dagster"))
            config += "\nstorage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        else:
            self.url = f"sqlite:///{self.home / 'bosun.db'}"
            self.env["BOSUN_DATABASE_URL"] = self.url
        (self.dagster_home / "dagster.yaml").write_text(config)
        self.daemon: subprocess.Popen | None = None
        self.report = ChaosReport()
        self._log = open(base / "daemon.log", "a")

    # -- processes --
    def start_daemon(self, workspace: Path = REPO / "workspace.yaml") -> None:
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=self.dagster_home,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.report.daemon_starts += 1

    def kill_daemon(self) -> None:
        """SIGKILL to the daemon's whole process group: the daemon, its code server and run workers."""
        if self.daemon and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait(timeout=30)

    def close(self) -> None:
        try:
            self.kill_daemon()
        finally:
            self._log.close()
            if self.pg:
                self.pg.stop()

    # -- the run --
    def run(
        self,
        lines: list[str],
        worker_kills: int,
        daemon_kills: int,
        pg_restarts: int,
        timeout: float,
        feed_chunks: int = 8,
        feed_interval: float = 1.0,
    ) -> ChaosReport:
        with self.environment():
            return self._run(lines, worker_kills, daemon_kills, pg_restarts, timeout, feed_chunks, feed_interval)

    @contextmanager
    def environment(self) -> Iterator[None]:
        """This process reads the run's own databases and instance inside; the caller's
        environment is restored afterwards."""
        saved = dict(os.environ)
        for k in (
            "BOSUN_HOME",
            "BOSUN_SAMPLE_DIR",
            "BOSUN_MODEL_DIR",
            "BOSUN_DATABASE_URL",
            "DAGSTER_HOME",
            "DAGSTER_PG_URL",
        ):
            if k in self.env:
                os.environ[k] = self.env[k]
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def _run(self, lines, worker_kills, daemon_kills, pg_restarts, timeout, feed_chunks, feed_interval) -> ChaosReport:
        import dagster as dg

        from assets.invoices.erp import ERPResource
        from assets.invoices.training import seed_erp
        from orchestration.definitions import payload_registry
        from orchestration.trigger.inbox import Inbox

        seed_erp(ERPResource(url=self.url), Path(self.env["BOSUN_SAMPLE_DIR"]))
        with dg.DagsterInstance.get():  # the instance's tables, before the daemon's processes race for them
            pass
        inbox = Inbox(self.url)
        self.start_daemon()
        chunk = -(-len(lines) // feed_chunks)
        plan = ["worker"] * worker_kills + ["daemon"] * daemon_kills + ["postgres"] * pg_restarts
        killed_runs: set[str] = set()
        next_feed, fed = time.monotonic(), 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.daemon.poll() is not None:  # a supervisor restarts what died
                self.report.daemon_exits += 1
                self.start_daemon()
            try:
                if fed < len(lines) and now >= next_feed:
                    inbox.ingest(lines[fed : fed + chunk], payload_registry)
                    fed = min(len(lines), fed + chunk)
                    next_feed = now + feed_interval
                    if fed >= len(lines):
                        self.report.fed_at = time.time()
                if plan:
                    self._maybe_kill(plan, killed_runs)
                if fed >= len(lines) and self._all_terminal(inbox):
                    # With kills still planned there is no batch left to kill in: judge() says so.
                    self.report.terminal_at = time.time()
                    break
            except Exception as exc:  # the database restarting: look again
                print(f"[chaos] {type(exc).__name__}: {exc}", file=sys.stderr)
            time.sleep(0.5)
        self.report.runs = self._run_summary()
        return self.report

    def _all_terminal(self, inbox) -> bool:
        return "received" not in inbox.counts()["by_status"]

    def _maybe_kill(self, plan: list[str], killed_runs: set[str]) -> None:
        """Kill when a batch run is executing its sagas (mid-batch), each kill on another run."""
        import dagster as dg

        try:
            with dg.DagsterInstance.get() as instance:
                for run in instance.get_runs(
                    filters=dg.RunsFilter(job_name="invoice_batch_job", statuses=[dg.DagsterRunStatus.STARTED])
                ):
                    if run.run_id in killed_runs:
                        continue
                    pid, in_sagas = None, False
                    for e in instance.all_logs(run.run_id):
                        m = _PID.search(e.message or "")
                        if m:
                            pid = int(m.group(1))
                        # The actions step has started: the sagas run (or the checks after them).
                        if (
                            e.dagster_event
                            and e.dagster_event.event_type_value == "STEP_START"
                            and e.step_key == "invoice_actions"
                        ):
                            in_sagas = True
                    # A worker is killed mid-saga; the daemon and Postgres while any batch runs.
                    if plan[0] == "worker" and (pid is None or not in_sagas):
                        continue
                    kind = plan.pop(0)
                    killed_runs.add(run.run_id)
                    at = time.time()
                    if kind == "worker":
                        os.kill(pid, signal.SIGKILL)
                    elif kind == "daemon":
                        self.kill_daemon()
                        time.sleep(2)
                        self.start_daemon()
                    else:
                        self.pg.restart()
                    self.report.kills.append({"kind": kind, "run": run.run_id, "pid": pid, "at": at})
                    return
        except Exception as exc:  # the database may be restarting: look again next time
            print(f"[chaos] watching runs failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _run_summary(self) -> dict:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="invoice_batch_job"))
        by_status: dict[str, int] = {}
        for r in runs:
            by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
        return {
            "batch_runs": len(runs),
            "by_status": by_status,
            "dagster_retries": sum(1 for r in runs if r.tags.get("dagster/retry_number")),
            "recovery_reruns": sum(1 for r in runs if r.tags.get("bosun/recovery_attempt")),
        }


# ---- step 4: acceptance ----------------------------------------------------------------------


def judge(chaos: dict, oracle: dict) -> list[str]:
    """What is wrong with the chaos run's end state (empty when it passed)."""
    problems = []
    if chaos["status"].get("received"):
        problems.append(f"{chaos['status']['received']} event(s) not terminal")
    if chaos["twice"]:
        problems.append(f"invoices paid twice: {chaos['twice'][:5]}")
    for name in ("ledger", "payments"):
        twice = {k: v for k, v in chaos[name].items() if len(v) > 1}
        if twice:
            problems.append(f"{name}: {len(twice)} invoice(s) with more than one live row, e.g. {list(twice)[:3]}")
    expected = {k: v[0] for k, v in oracle["payments"].items()}
    for name in ("ledger", "payments"):
        got = {k: v[0] for k, v in chaos[name].items()}
        if got != expected:
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
            problems.append(
                f"{name} != oracle: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}, "
                f"{len(wrong)} with another amount {wrong[:3]}"
            )
    if not chaos["audit"].get("ok"):
        problems.append(f"audit does not verify: {chaos['audit']}")
    not_real = [d for d in chaos["dead_letters"] if "already paid" in d["error"] or "recovery gave up" in d["error"]]
    if not_real:
        problems.append(f"{len(not_real)} dead letter(s) that are no real failure, e.g. {not_real[:2]}")
    if len(chaos["dead_letters"]) != len(oracle["dead_letters"]):
        problems.append(
            f"{len(chaos['dead_letters'])} dead letters, the fault-free run has {len(oracle['dead_letters'])}"
        )
    return problems


def run_chaos(
    events: int,
    storage: str,
    seed: int,
    worker_kills: int,
    daemon_kills: int,
    pg_restarts: int,
    timeout: float,
    model_dir: Path | None = None,
    keep: bool = False,
    feed_chunks: int = 8,
    reference_in_parallel: bool = False,
) -> dict:
    """`reference_in_parallel`: the fault-free run beside the chaos run (shorter wall time,
    but its events/s is then no clean baseline)."""
    base = Path(tempfile.mkdtemp(prefix="bosun-chaos-"))
    try:
        sample_dir = base / "sample"
        models = model_dir or base / "models"
        env = {
            **base_env(),
            "BOSUN_HOME": str(base / "prepare"),
            "BOSUN_MODEL_DIR": str(models),
            "BOSUN_SAMPLE_DIR": str(sample_dir),
            "PYTHONPATH": str(REPO),
        }
        t0 = time.perf_counter()
        _subprocess(
            ["_prepare", str(sample_dir), str(events), str(seed), str(models), "sample" if model_dir else "train"],
            env,
            base / "prepare.log",
            timeout=900,
        )
        stream = make_stream(sample_dir / "invoices.jsonl", seed)
        (base / "stream.jsonl").write_text("\n".join(stream["lines"]) + "\n")
        prepared_s = time.perf_counter() - t0
        ref_env = {**env, "BOSUN_HOME": str(base / "reference")}
        reference = _start(
            ["_reference", str(base / "stream.jsonl"), str(base / "oracle.json")], ref_env, base / "reference.log"
        )
        try:
            if not reference_in_parallel:
                _finish(reference, base / "reference.log", timeout)
        except BaseException:
            if reference.poll() is None:
                os.killpg(reference.pid, signal.SIGKILL)
            raise

        try:
            chaos = ChaosRun(base / storage, storage, sample_dir, models)
            try:
                started = time.time()
                report = chaos.run(
                    stream["lines"], worker_kills, daemon_kills, pg_restarts, timeout, feed_chunks=feed_chunks
                )
            finally:
                chaos.close()
                if chaos.pg:  # read the outcome from a running server
                    chaos.pg.start()
            try:
                end = outcome_summary(chaos.url, chaos.home)
            finally:
                if chaos.pg:
                    chaos.pg.stop() if keep else chaos.pg.remove()
            _finish(reference, base / "reference.log", timeout)
        finally:
            if reference.poll() is None:
                os.killpg(reference.pid, signal.SIGKILL)
                reference.wait()
        oracle = json.loads((base / "oracle.json").read_text())
        problems = judge(end, oracle)
        kinds = [k["kind"] for k in report.kills]
        wanted = ["worker"] * worker_kills + ["daemon"] * daemon_kills + ["postgres"] * pg_restarts
        if kinds != wanted:
            problems.append(f"kills done {kinds}, planned {wanted}")
        if report.terminal_at is None:
            problems.append(f"not every event terminal within {timeout:.0f} s")
        last_kill = max((k["at"] for k in report.kills), default=None)
        n = end["events"]
        chaos_s = (report.terminal_at or time.time()) - started
        figures = {
            "storage": storage,
            "lines": len(stream["lines"]),
            **{k: v for k, v in stream.items() if k != "lines"},
            "inbox_events": n,
            "status": end["status"],
            "paid": len(end["payments"]),
            "oracle_paid": len(oracle["payments"]),
            "dead_letters": len(end["dead_letters"]),
            "oracle_dead_letters": len(oracle["dead_letters"]),
            "recoveries": {k: v for k, v in end["audit_kinds"].items() if k.startswith("recovery_")},
            "runs": report.runs,
            "daemon_starts": report.daemon_starts,
            "daemon_exits": report.daemon_exits,
            "kills": [{"kind": k["kind"], "after_s": round(k["at"] - started, 1)} for k in report.kills],
            "chaos_s": round(chaos_s, 1),
            "chaos_events_per_s": round(n / chaos_s, 1),
            "baseline_in_process_s": round(oracle["seconds"], 1),
            "baseline_events_per_s": round(oracle["events"] / oracle["seconds"], 1),
            "last_kill_to_last_terminal_s": round(report.terminal_at - last_kill, 1)
            if report.terminal_at and last_kill
            else None,
            "prepare_s": round(prepared_s, 1),
            "problems": problems,
            "ok": not problems,
        }
        if problems:
            keep = True  # logs and databases to look at
        if keep:
            figures["kept"] = str(base)
        return figures
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_prepare":
        _prepare(argv[1], int(argv[2]), int(argv[3]), argv[4], argv[5] == "train")
        return 0
    if argv and argv[0] == "_reference":
        _reference(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--worker-kills", type=int, default=2)
    ap.add_argument("--daemon-kills", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--model-dir", type=Path, help="an already trained local model (skips training)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    a = ap.parse_args(argv)
    figures = run_chaos(
        a.events,
        a.storage,
        a.seed,
        a.worker_kills,
        a.daemon_kills,
        1 if a.storage == "postgres" else 0,
        a.timeout,
        a.model_dir,
        a.keep,
    )
    print(json.dumps(figures, indent=2, default=str))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
