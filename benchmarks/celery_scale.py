"""Batch work spread over Celery workers: the deploy/ process set (code server, daemon,
webserver, N Celery workers over Redis, all state in fresh Postgres databases) with N = 1, 2
and 4 workers, beside the same set on the in-process executor, on one backlog of sample
invoices: seconds from ingest to every event terminal, events/s, batch runs.

    python benchmarks/celery_scale.py [--events 400] [--workers 1,2,4] [--json out.json]

Needs Postgres (BOSUN_TEST_PG_URL's server) and Redis, as tests/deploy/test_process_set.py,
whose process set it starts. Two cores cap what more workers can add on this machine: the
ratio between the rows is the figure, not the absolute events/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "deploy"), str(REPO / "tests"), str(REPO)]


def train_model(base: Path) -> Path:
    from assets.invoices import sample_data
    from assets.invoices.erp import ERPResource
    from assets.invoices.training import seed_erp, train
    from resources.local_model import LocalModel

    sample_data.write_sample_data(base / "training", n_invoices=2000, seed=1007)
    scratch = ERPResource(url=f"sqlite:///{base / 'training' / 'erp.db'}")
    seed_erp(scratch, base / "training")
    train(LocalModel(model_dir=str(base / "models")), scratch, base / "training")
    return base / "models"


@contextlib.contextmanager
def fresh_databases():
    from conftest import PG_ADMIN_URL, _fresh_database  # the suite's own fresh-database helper

    (pg_url, drop_pg), (dagster_url, drop_dagster) = _fresh_database(PG_ADMIN_URL), _fresh_database(PG_ADMIN_URL)
    try:
        yield pg_url, dagster_url
    finally:
        drop_pg()
        drop_dagster()


def run(label: str, workers: int, events: int, model_dir: Path) -> dict:
    import test_process_set as ps  # the process set the deploy test starts, reused as is
    from bosun_testing import dagster_graphql, dagster_webserver_up

    extra = {"BOSUN_RUN_EXECUTOR": "in_process"} if label == "in_process" else {}
    with fresh_databases() as (pg_url, dagster_pg_url), tempfile.TemporaryDirectory() as tmp:
        with ps.process_set(
            "redis", Path(tmp), pg_url, dagster_pg_url, model_dir, workers=workers, invoices=events, **extra
        ) as stack:
            deadline = time.monotonic() + 1800
            ps._wait("webserver", lambda: dagster_webserver_up(stack.web_port), deadline, stack.processes)
            ingest = ps._ingest(stack)
            started = time.monotonic()
            ps._wait("terminal", lambda: ps._all_terminal(stack, ingest["accepted"]), deadline, stack.processes, 0.5)
            seconds = time.monotonic() - started
            runs = dagster_graphql(stack.web_port, ps.BATCH_RUNS)["runsOrError"]["results"]
    return {
        "executor": label,
        "workers": workers if label == "celery" else 0,
        "events": ingest["accepted"],
        "seconds": round(seconds, 1),
        "events_per_s": round(ingest["accepted"] / seconds, 2),
        "batch_runs": len(runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as base:
        model_dir = train_model(Path(base))
        rows = [run("in_process", 1, args.events, model_dir)]
        rows += [run("celery", int(n), args.events, model_dir) for n in args.workers.split(",")]
    baseline = rows[0]["events_per_s"]
    for r in rows:
        r["vs_in_process"] = round(r["events_per_s"] / baseline, 2)
        print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
