"""Throughput of the action layer: payment sagas per second on SQLite and Postgres.

Per database, each on a fresh database with the same generated vendors and POs:

1. direct       - the targets' bulk writes called straight (post ledger entries, then
                  schedule payments, then queue the vendor notices in the outbox, in
                  chunks): the baseline, no saga log;
2. saga         - the durable executor (saga log before/after every step, leases,
                  prerequisite checks), no faults;
3. saga+faults  - the same with the fault-injection harness: ~3% of steps fail
                  transiently, ~2% lose their answer past the timeout, ~8% are refused
                  (and compensated), some compensations are refused (escalated).

The ratio saga/direct is the saga log's overhead. Postgres is skipped if unreachable
(BOSUN_BENCH_PG_URL, default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).

    python benchmarks/actions.py [--sagas 5000] [--batch 1000] [--per-call 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fakes"))
import saga_fault_worker as worker  # noqa: E402

from assets.invoices.erp import ERPResource  # noqa: E402
from assets.invoices.payment_saga import payment_notice  # noqa: E402
from resources.outbox import NotificationOutbox  # noqa: E402


def _direct(url: str, items: list[dict], per_call: int) -> None:
    erp = ERPResource(url=url)
    for i in range(0, len(items), per_call):
        chunk = items[i : i + per_call]
        erp.post_ledger_entries([{**it, "key": f"post_ledger_entry:{it['key']}"} for it in chunk])
    for i in range(0, len(items), per_call):
        chunk = items[i : i + per_call]
        erp.schedule_payments([{**it, "key": f"schedule_payment:{it['key']}"} for it in chunk])
    outbox = NotificationOutbox(url=url)
    for i in range(0, len(items), per_call):
        chunk = items[i : i + per_call]
        outbox.queue_notifications(
            [payment_notice({**it, "saga_id": it["key"], "key": f"notify_vendor:{it['key']}"}) for it in chunk]
        )


def _saga(url: str, items: list[dict], batch: int, per_call: int, faults: bool) -> dict:
    ex, _ = worker.executor(url, len(items), 7, faults=faults, per_call=per_call)
    counts: dict[str, int] = {}
    for i in range(0, len(items), batch):
        out = ex.run(items[i : i + batch], f"bench-{i // batch}")
        counts["done"] = counts.get("done", 0) + len(out.done)
        for f in out.failed.values():
            k = "escalated" if f.get("compensation_error") else "compensated"
            counts[k] = counts.get(k, 0) + 1
    return counts


def _databases(tmp: Path):
    yield "sqlite", (lambda name: f"sqlite:///{tmp / f'{name}.db'}"), (lambda url: None)
    admin_url = os.environ.get("BOSUN_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as err:
        print(f"postgres skipped: {err.__class__.__name__}", file=sys.stderr)
        return

    def make(name):
        db = f"bosun_bench_{name.replace('+', '_')}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
        return sa.engine.make_url(admin_url).set(database=db).render_as_string(hide_password=False)

    def drop(url):
        from orchestration.core.db import dispose

        dispose(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))

    yield "postgres", make, drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sagas", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--per-call", type=int, default=500)
    args = ap.parse_args()
    items = worker.saga_items(args.sagas)
    report = {
        "sagas": args.sagas,
        "steps": ["post_ledger_entry", "schedule_payment", "notify_vendor"],
        "batch": args.batch,
        "per_call": args.per_call,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for db, make, drop in _databases(Path(tmp)):
            figures = {}
            for way in ("direct", "saga", "saga+faults"):
                url = make(way)
                worker.seed(ERPResource(url=url), args.sagas)
                start = time.perf_counter()
                if way == "direct":
                    _direct(url, items, args.per_call)
                    outcome = {"done": args.sagas}
                else:
                    outcome = _saga(url, items, args.batch, args.per_call, faults=way == "saga+faults")
                secs = time.perf_counter() - start
                figures[way] = {"seconds": round(secs, 3), "sagas_per_s": round(args.sagas / secs, 1), **outcome}
                drop(url)
            figures["saga_log_overhead"] = round(figures["saga"]["seconds"] / figures["direct"]["seconds"], 2)
            figures["faults_slowdown"] = round(figures["saga+faults"]["seconds"] / figures["saga"]["seconds"], 2)
            report[db] = figures
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
