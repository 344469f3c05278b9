"""The real daemon path, measured: `dagster-daemon` + inbox sensor + queued runs, one run
process per batch, against the bare loop on the same events in the same run.

    python benchmarks/daemon_path.py [--events 10000] [--storage sqlite|postgres] [--seed 7]
        [--steady RATE --seconds S] [--json PATH] [--model-dir DIR] [--timeout 1800] [--keep]
        [--code-server separate|daemon]

1. A sample of N invoice events (the generator's re-deliveries and resubmissions included),
   the ERP seeded with its vendors and POs, a trained local model (`chaos.py`'s `_prepare`).
2. The bare loop (`throughput.py`'s `bare_loop`): the same per-event work on the same events
   in one process, no Dagster, on a fresh database of the same kind.
3. The daemon path (`chaos.py`'s `ChaosRun` with no fault: SQLite, or with `--storage
   postgres` fresh databases in a private Postgres cluster), the code server its own process
   as deploy/Procfile runs it, on deploy/dagster.yaml's instance config (`--code-server daemon`:
   started and restarted by the daemon, as `dagster dev` does, on the repository's dagster.yaml).
   The daemon is started and left to bootstrap the context (the batch runs wait for it);
   then, by default, the N events are ingested at once (a backlog) and the clock runs until
   every event is terminal. With `--steady RATE --seconds S` events arrive at RATE per second
   for S seconds instead, and the clock runs until they are all terminal.

Figures: events/s from the ingest to the last event terminal, and its ratio to the bare loop;
event->outcome latency p50/p95/p99 (the inbox's `received_at` to its `updated_at` when the
event reached its terminal state); peak summed RSS of every process of the daemon's and the
code server's trees (daemon, code server, run workers), sampled every 0.2 s, and their peak
summed PSS (pages shared between them, such as the libraries every run worker maps, counted
once: what they take of the machine's memory); batch runs and their sizes. A table on
stdout, the figures as JSON in `--json` (default: `daemon_path-<storage>.json` in the temp dir,
kept only with --keep; `--json PATH` to keep them anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chaos  # noqa: E402  (the daemon machinery: processes, environment, private Postgres)
from process_memory import RssSampler  # noqa: E402

REPO = chaos.REPO


# ---- the bare loop (a subprocess with its own environment) -----------------------------------


def _bare(stream: str, out: str, batch_size: int) -> None:
    """The events of `stream` through `throughput.bare_loop` on BOSUN_DATABASE_URL."""
    import throughput

    from assets.invoices.training import seed_erp
    from orchestration.core import settings
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    seed_erp(defs.resources["erp"], settings.sample_dir())
    throughput._ingest(defs, Path(stream).read_text().splitlines())
    started = time.perf_counter()
    n = throughput.bare_loop(defs, batch_size)
    Path(out).write_text(json.dumps({"events": n, "seconds": time.perf_counter() - started}))


# ---- the daemon path -------------------------------------------------------------------------


@dataclass
class PathFigures:
    mode: str
    storage: str
    events: int = 0
    ingest_to_terminal_s: float | None = None
    events_per_s: float | None = None
    latency_s: dict = field(default_factory=dict)
    by_status: dict = field(default_factory=dict)
    daemon_to_bootstrapped_s: float | None = None
    peak_rss_mib: float = 0.0
    peak_rss_processes: int = 0
    peak_pss_mib: float = 0.0  # the same processes, shared pages counted once
    max_processes: int = 0
    at_peak_mib: list = field(default_factory=list)  # [MiB, command line] per process at the peak
    runs: dict = field(default_factory=dict)
    batch_sizes: dict = field(default_factory=dict)
    stages_s: dict = field(default_factory=dict)  # where event->outcome latency goes, per stage
    offered_rate: float | None = None
    timed_out: bool = False


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(round(q * len(s))) - 1))], 3)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(s[-1], 3), "n": len(s)}


class DaemonPath(chaos.ChaosRun):
    """`ChaosRun`'s daemon, environment and storage, driven without faults.

    `code_server="separate"` (the default) runs the process set deploy/ runs: the code server
    is its own long-lived process (deploy/Procfile's `codeserver` line) and the
    daemon reads deploy/workspace.yaml. `"daemon"` is `dagster dev`'s and the repository
    workspace.yaml's layout: the daemon starts the code server itself and, every 60 s
    (Dagster's workspace refresh), a fresh one, the old one living on until its run workers
    end (two code servers' imports and memory under load)."""

    def __init__(self, *args, code_server: str = "separate", **kwargs):
        super().__init__(*args, **kwargs)
        self.code_server_mode = code_server
        self.code_server: subprocess.Popen | None = None
        if code_server == "separate":
            # deploy/'s instance config too (no compute-log capture beside each run, the queue
            # limit from the environment), on SQLite files under DAGSTER_HOME without --storage postgres.
            import yaml

            config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
            if self.storage != "postgres":
                config.pop("storage")
            (self.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            self.env["BOSUN_MAX_CONCURRENT_RUNS"] = "3"  # the repository's dagster.yaml's limit

    def start_daemon(self) -> None:
        if self.code_server_mode == "daemon":
            return super().start_daemon()
        port = chaos.free_port()
        self.env.update(BOSUN_CODE_SERVER_HOST="127.0.0.1", BOSUN_CODE_SERVER_PORT=str(port))
        procfile = (REPO / "deploy" / "Procfile").read_text()
        line = next(ln for ln in procfile.splitlines() if ln.startswith("codeserver:"))
        # The Procfile's own command line, through the shell as honcho runs it (its variables:
        # the bind address and port), the virtualenv's executables first on the PATH.
        self.env.update(BOSUN_CODE_SERVER_BIND="127.0.0.1", PATH=f"{chaos.BIN}{os.pathsep}{self.env.get('PATH', '')}")
        self.code_server = subprocess.Popen(
            ["sh", "-c", f"exec {line.split(':', 1)[1].strip()}"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._await_code_server(port)
        super().start_daemon(REPO / "deploy" / "workspace.yaml")

    def _await_code_server(self, port: int, timeout: float = 120) -> None:
        # A TCP connect, not `dagster api grpc-health-check`: each of those is a Python process
        # importing Dagster, a second of CPU per poll on a machine the benchmark measures. The
        # daemon waits for a code server that is still loading its code (deploy/ starts them together).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.code_server.poll() is not None:
                raise RuntimeError(f"the code server exited; see {self.base / 'daemon.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the code server did not listen within {timeout:g} s")

    def close(self) -> None:
        try:
            super().close()
        finally:
            # Its own process group: the code server, its gRPC child and their run workers.
            if self.code_server and self.code_server.poll() is None:
                os.killpg(self.code_server.pid, signal.SIGKILL)
                self.code_server.wait(timeout=30)

    def roots(self) -> list[int]:
        return [p.pid for p in (self.daemon, self.code_server) if p is not None]

    def measure(self, lines: list[str], steady_rate: float | None, seconds: float, timeout: float) -> PathFigures:
        with self.environment():
            return self._measure(lines, steady_rate, seconds, timeout)

    def _measure(self, lines, steady_rate, seconds, timeout) -> PathFigures:
        import dagster as dg

        from assets.invoices.erp import ERPResource
        from assets.invoices.training import seed_erp
        from orchestration.definitions import payload_registry
        from orchestration.trigger.inbox import Inbox

        figures = PathFigures("steady" if steady_rate else "backlog", self.storage, offered_rate=steady_rate)
        seed_erp(ERPResource(url=self.url), Path(self.env["BOSUN_SAMPLE_DIR"]))
        with dg.DagsterInstance.get():  # the instance's tables, before the daemon's processes race for them
            pass
        inbox = Inbox(self.url)
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        self.start_daemon()
        with RssSampler(self.roots()) as rss:
            # The context bootstrap (the first tick's run): a running daemon's state, not the backlog's.
            while not self._bootstrapped():
                if time.monotonic() > deadline or self.daemon.poll() is not None:
                    raise RuntimeError(f"the daemon never bootstrapped the context; see {self.base / 'daemon.log'}")
                time.sleep(0.5)
            figures.daemon_to_bootstrapped_s = round(time.monotonic() - started, 1)
            t0 = time.time()
            if steady_rate:
                self._feed_steadily(inbox, lines, steady_rate, seconds, payload_registry)
            else:
                inbox.ingest(lines, payload_registry)
            while time.monotonic() < deadline:
                if self.daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited; see {self.base / 'daemon.log'}")
                if self._all_terminal(inbox):
                    break
                time.sleep(0.2)
            else:
                figures.timed_out = True
        figures.peak_rss_mib = round(rss.peak_bytes / 2**20, 1)
        figures.peak_rss_processes, figures.max_processes = rss.peak_processes, rss.max_processes
        figures.peak_pss_mib = round(rss.peak_pss_bytes / 2**20, 1)
        figures.at_peak_mib = [[round(r / 2**20, 1), cmd] for _, r, cmd in sorted(rss.at_peak, key=lambda p: -p[1])]
        handled, runs = self._handled(), self._batch_runs()
        latencies = [terminal - received for _, received, terminal in handled]
        last = max((terminal for _, _, terminal in handled), default=None)
        figures.events = len(latencies)
        figures.by_status = inbox.counts()["by_status"]
        figures.latency_s = percentiles(latencies)
        if last is not None and not figures.timed_out:
            figures.ingest_to_terminal_s = round(last - t0, 2)
            figures.events_per_s = round(figures.events / max(last - t0, 1e-6), 1)
        figures.runs = self._run_summary()
        figures.batch_sizes = self._batch_sizes(runs)
        figures.stages_s = self._stages(handled, runs)
        return figures

    def _bootstrapped(self) -> bool:
        import dagster as dg

        from assets.invoices.jobs import context_assets

        with dg.DagsterInstance.get() as instance:
            return all(instance.get_latest_materialization_event(k) is not None for a in context_assets for k in a.keys)

    def _feed_steadily(self, inbox, lines: list[str], rate: float, seconds: float, registry) -> None:
        """Events at `rate` per second for `seconds` (a small ingest every 0.1 s)."""
        total = min(len(lines), int(rate * seconds))
        start, fed = time.monotonic(), 0
        while fed < total:
            due = min(total, int((time.monotonic() - start) * rate))
            if due > fed:
                inbox.ingest(lines[fed:due], registry)
                fed = due
            time.sleep(0.1)

    def _handled(self) -> list[tuple[int, float, float]]:
        """(seq, `received_at`, the terminal state's `updated_at`, epoch s) of every event a batch
        handled (rejected input never reaches one)."""
        import sqlalchemy as sa

        from orchestration.core.db import engine_for, inbox
        from orchestration.trigger.inbox import TERMINAL_STATES, _aware

        handled = [s for s in TERMINAL_STATES if s != "rejected"]
        q = sa.select(inbox.c.seq, inbox.c.received_at, inbox.c.updated_at).where(inbox.c.status.in_(handled))
        with engine_for(self.url).connect() as conn:
            return [(seq, _aware(r).timestamp(), _aware(u).timestamp()) for seq, r, u in conn.execute(q) if u]

    @staticmethod
    def _batch_runs() -> list:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            records = instance.get_run_records(filters=dg.RunsFilter(job_name="invoice_batch_job"))
            # When the run coordinator dequeued each (RUN_STARTING), for the stages.
            starting = {
                r.dagster_run.run_id: instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
                for r in records
            }
        return [(r, starting[r.dagster_run.run_id]) for r in records]

    @staticmethod
    def _batch_sizes(runs: list) -> dict:
        records = [r for r, _ in runs]
        sizes = sorted(int(r.dagster_run.tags.get("bosun/batch_events", 0)) for r in records)
        durations = sorted(r.end_time - r.start_time for r in records if r.start_time and r.end_time)
        if not sizes:
            return {}
        return {
            "runs": len(sizes),
            "min": sizes[0],
            "median": sizes[len(sizes) // 2],
            "max": sizes[-1],
            "run_seconds_median": round(durations[len(durations) // 2], 2) if durations else None,
            "run_seconds_max": round(durations[-1], 2) if durations else None,
        }

    @staticmethod
    def _stages(handled: list[tuple[int, float, float]], runs: list) -> dict:
        """Event->outcome latency by stage, per event its batch run handled (p50 / p95):
        received -> the sensor requested its run (Dagster's `create_timestamp`) -> the run
        coordinator dequeued it (RUN_STARTING) -> the run worker started (RUN_START) -> the event
        terminal. Events of sweep runs (no partition) are left out."""
        from orchestration.trigger.batching import BatchRange

        spans = []
        for r, starting in runs:
            part = r.dagster_run.tags.get("dagster/partition")
            if part and r.start_time:
                created = r.create_timestamp.timestamp()
                spans.append(
                    (BatchRange.parse(part), created, starting[0].timestamp if starting else created, r.start_time)
                )
        stages: dict[str, list[float]] = {"sensor": [], "queue": [], "worker_start": [], "run_to_terminal": []}
        for seq, received, terminal in handled:
            span = next((s for s in spans if s[0].first <= seq <= s[0].last), None)
            if span is None:
                continue
            _, created, dequeued, started = span
            for name, value in zip(
                stages, (created - received, dequeued - created, started - dequeued, terminal - started)
            ):
                stages[name].append(value)
        return {
            name: {k: v for k, v in percentiles(values).items() if k in ("p50", "p95", "n")}
            for name, values in stages.items()
        }


# ---- the whole benchmark ---------------------------------------------------------------------


def run_benchmark(
    events: int,
    storage: str,
    seed: int,
    steady_rate: float | None,
    seconds: float,
    timeout: float,
    model_dir: Path | None,
    keep: bool,
    bare_batch_size: int = 1000,
    code_server: str = "separate",
) -> dict:
    base = Path(tempfile.mkdtemp(prefix="bosun-daemon-path-"))
    path: DaemonPath | None = None
    try:
        if steady_rate:
            events = int(steady_rate * seconds)
        sample_dir, models = base / "sample", model_dir or base / "models"
        env = {
            **chaos.base_env(),
            "BOSUN_HOME": str(base / "prepare"),
            "BOSUN_MODEL_DIR": str(models),
            "BOSUN_SAMPLE_DIR": str(sample_dir),
            "PYTHONPATH": str(REPO),
        }
        t = time.perf_counter()
        mode = "sample" if model_dir else "train"
        chaos._subprocess(
            ["_prepare", str(sample_dir), str(events), str(seed), str(models), mode], env, base / "prepare.log", 900
        )
        prepare_s = time.perf_counter() - t
        lines = [ln for ln in (sample_dir / "invoices.jsonl").read_text().splitlines() if ln.strip()]
        if steady_rate:  # what arrives in S seconds, and the bare loop gets the same
            lines = lines[: int(steady_rate * seconds)]
        stream = base / "stream.jsonl"
        stream.write_text("\n".join(lines) + "\n")

        path = DaemonPath(base / storage, storage, sample_dir, models, code_server=code_server)
        bare_url = path.pg.create("bare") if path.pg else f"sqlite:///{base / 'bare.db'}"
        (base / "bare").mkdir()
        bare_env = {**env, "BOSUN_HOME": str(base / "bare"), "BOSUN_DATABASE_URL": bare_url}
        _run_self(["_bare", str(stream), str(base / "bare.json"), str(bare_batch_size)], bare_env, base / "bare.log")
        bare = json.loads((base / "bare.json").read_text())
        bare["events_per_s"] = round(bare["events"] / bare["seconds"], 1)
        try:
            figures = path.measure(lines, steady_rate, seconds, timeout)
        finally:
            path.close()
        out = {
            "events_sampled": len(lines),
            "prepare_s": round(prepare_s, 1),
            "bare_loop": {**bare, "seconds": round(bare["seconds"], 2)},
            "daemon_path": asdict(figures),
            "ratio_to_bare": round(figures.events_per_s / bare["events_per_s"], 3) if figures.events_per_s else None,
            "code_server": code_server,
            "dagster_yaml": (path.dagster_home / "dagster.yaml").read_text(),
        }
        if keep:
            out["kept"] = str(base)
        return out
    finally:
        if path is not None and path.pg:
            path.pg.stop() if keep else path.pg.remove()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _run_self(mode: list[str], env: dict, log: Path, timeout: float = 1800) -> None:
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, __file__, *mode], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        raise RuntimeError(f"{mode[0]} failed:\n{log.read_text()[-3000:]}")


def table(fig: dict) -> str:
    d, bare = fig["daemon_path"], fig["bare_loop"]
    lat, sizes = d["latency_s"], d["batch_sizes"]
    rows = [
        (
            "mode / storage",
            f"{d['mode']} / {d['storage']}"
            + (f" at {d['offered_rate']:g}/s" if d["offered_rate"] else "")
            + f", code server: {fig.get('code_server')}",
        ),
        ("events handled", f"{d['events']} ({', '.join(f'{k} {v}' for k, v in sorted(d['by_status'].items()))})"),
        ("daemon start -> context bootstrapped", f"{d['daemon_to_bootstrapped_s']} s"),
        (
            "first ingest -> last event terminal",
            f"{d['ingest_to_terminal_s']} s" + (" (TIMED OUT)" if d["timed_out"] else ""),
        ),
        ("daemon path events/s", f"{d['events_per_s']}"),
        ("bare loop events/s (same events)", f"{bare['events_per_s']} ({bare['events']} in {bare['seconds']} s)"),
        ("ratio daemon path / bare loop", f"{fig['ratio_to_bare']}"),
        ("event->outcome p50 / p95 / p99 / max", " / ".join(f"{lat.get(k)} s" for k in ("p50", "p95", "p99", "max"))),
        ("peak RSS, all processes", f"{d['peak_rss_mib']} MiB over {d['peak_rss_processes']} processes"),
        ("peak PSS, all processes (shared once)", f"{d['peak_pss_mib']} MiB"),
        (
            "batch runs (events per run)",
            f"{sizes.get('runs')} runs, min {sizes.get('min')} / median {sizes.get('median')} / max {sizes.get('max')}"
            if sizes
            else "none",
        ),
        ("run seconds median / max", f"{sizes.get('run_seconds_median')} / {sizes.get('run_seconds_max')}"),
        ("runs by status", json.dumps(d["runs"].get("by_status", {}))),
        (
            "latency by stage p50 (p95)",
            ", ".join(f"{k} {v.get('p50')} ({v.get('p95')}) s" for k, v in d.get("stages_s", {}).items()),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_bare":
        _bare(argv[1], argv[2], int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steady", type=float, metavar="RATE", help="events per second arriving steadily")
    ap.add_argument("--seconds", type=float, default=180, help="how long events arrive with --steady")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--model-dir", type=Path, help="an already trained local model (skips training)")
    ap.add_argument("--json", type=Path, help="where to write the figures (default: beside the temp dir's logs)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    ap.add_argument(
        "--code-server",
        choices=["separate", "daemon"],
        default="separate",
        help="separate: its own process, as deploy/ runs it (default); daemon: started by the daemon, as dagster dev",
    )
    a = ap.parse_args(argv)
    fig = run_benchmark(
        a.events, a.storage, a.seed, a.steady, a.seconds, a.timeout, a.model_dir, a.keep, code_server=a.code_server
    )
    target = a.json or (Path(fig["kept"]) / f"daemon_path-{a.storage}.json" if "kept" in fig else None)
    if target:
        target.write_text(json.dumps(fig, indent=2, default=str) + "\n")
    print(table(fig))
    print(json.dumps({k: v for k, v in fig.items() if k != "dagster_yaml"}, default=str))
    return 1 if fig["daemon_path"]["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
