"""Events per second accepted into the inbox: in-process, `bosun ingest`, and the HTTP API.

For SQLite and Postgres (if reachable), each on a fresh database with the same N events:

1. in-process  - `Inbox.ingest` on the parsed lines: the baseline (validation + one
                 multi-row insert), no process or HTTP in the way;
2. bosun ingest - the console script on a JSONL file, wall time including its start-up
                 (and the start-up alone, measured on an empty file);
3. HTTP API    - `bosun serve` on a loopback port, one client posting batches of 100
                 sequentially (202 each), wall time from the first request to the last answer.

    python benchmarks/ingest.py [--events 5000] [--pg-url postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]

The machine is shared and noisy: the ratios to the in-process baseline are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa

BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bosun_testing import free_port  # noqa: E402  (the suite's: below the ephemeral port range)


def _events(n: int) -> list[dict]:
    from assets.invoices import sample_data

    seen, out = set(), []
    for e in sample_data.generate(n, 17).events:
        if e["id"] not in seen:
            seen.add(e["id"])
            out.append(e)
    return out[:n]


class _Database:
    """A fresh database: a SQLite file, or a new Postgres database dropped afterwards."""

    def __init__(self, kind: str, base: Path, pg_admin: str | None):
        self.kind, self._admin, self._name = kind, None, None
        if kind == "sqlite":
            self.url = f"sqlite:///{base / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            self._name = f"bosun_bench_{uuid.uuid4().hex[:10]}"
            self._admin = sa.create_engine(pg_admin, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self._name}"'))
            self.url = sa.engine.make_url(pg_admin).set(database=self._name).render_as_string(hide_password=False)

    def drop(self) -> None:
        from orchestration.core.db import dispose

        dispose(self.url)
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
            self._admin.dispose()


def _backends(pg_admin: str) -> list[str]:
    """SQLite always; Postgres when its admin URL answers (a missing one is reported, not fatal)."""
    try:
        sa.create_engine(pg_admin).connect().close()
        return ["sqlite", "postgres"]
    except Exception as exc:  # noqa: BLE001
        print(f"postgres skipped: {type(exc).__name__}: {exc}".splitlines()[0])
        return ["sqlite"]


def _env(home: Path, url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BOSUN_"))}
    env.update(BOSUN_HOME=str(home), BOSUN_DATABASE_URL=url, BOSUN_API_MAX_BODY_BYTES=str(16 << 20))
    return env


def in_process(url: str, lines: list[str]) -> float:
    from orchestration.definitions import payload_registry
    from orchestration.trigger.inbox import Inbox

    inbox = Inbox(url)
    started = time.perf_counter()
    summary = inbox.ingest(lines, payload_registry)
    elapsed = time.perf_counter() - started
    assert summary.accepted == len(lines), summary.as_dict()
    return elapsed


def cli_ingest(env: dict, path: Path, n: int) -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(BIN / "bosun"), "ingest", str(path)], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["accepted"] == n, proc.stdout[:500]
    return elapsed


def api(env: dict, events: list[dict], home: Path) -> float:
    from orchestration.api.keys import ApiKeys

    key, _ = ApiKeys(env["BOSUN_DATABASE_URL"]).create("bench", ["events:write"], rate_per_s=1e6, burst=10**6)
    port = free_port()
    log = open(home / "serve.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "bosun"), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("bosun serve did not start: " + (home / "serve.log").read_text()[-1000:])
            time.sleep(0.2)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            started = time.perf_counter()
            for i in range(0, len(events), 100):
                r = client.post("/v1/events", json=events[i : i + 100])
                assert r.status_code == 202, r.text[:500]
            return time.perf_counter() - started
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=5000)
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BOSUN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    )
    args = p.parse_args()
    events = _events(args.events)
    n = len(events)
    lines = [json.dumps(e) for e in events]
    base = Path(tempfile.mkdtemp(prefix="bosun-bench-ingest-"))
    jsonl, empty = base / "events.jsonl", base / "empty.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    empty.write_text("")
    backends = _backends(args.pg_url)
    rows = []
    for kind in backends:
        figures = {}
        for way in ("in-process", "bosun ingest", "HTTP API (100/request)"):
            db = _Database(kind, base, args.pg_url)
            home = base / f"{kind}-{way.split()[0]}"
            home.mkdir(exist_ok=True)
            env = _env(home, db.url)
            try:
                if way == "in-process":
                    figures[way] = in_process(db.url, lines)
                elif way == "bosun ingest":
                    startup = cli_ingest(env, empty, 0)
                    figures[way] = cli_ingest(env, jsonl, n)
                    figures["bosun ingest start-up alone"] = startup
                else:
                    figures[way] = api(env, events, home)
            finally:
                db.drop()
        baseline = n / figures["in-process"]
        for way, secs in figures.items():
            rate = None if way.endswith("alone") else n / secs
            rows.append((kind, way, secs, rate, None if rate is None else rate / baseline))
    print(f"\n{n} events, {os.cpu_count()} cores\n")
    print(f"{'db':<9}{'path':<30}{'seconds':>9}{'events/s':>11}{'vs in-process':>15}")
    for kind, way, secs, rate, ratio in rows:
        print(
            f"{kind:<9}{way:<30}{secs:>9.2f}{'' if rate is None else f'{rate:,.0f}':>11}"
            f"{'' if ratio is None else f'{ratio:.2f}x':>15}"
        )


if __name__ == "__main__":
    main()
