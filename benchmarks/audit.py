"""Audit log speed: appending, verifying, searching and archiving N decision-sized records.

For SQLite and Postgres (if reachable), each on a fresh database:

1. raw scan      - SELECT every row in seq order, pages of 10,000: the baseline (what reading
                   the table costs before any hashing);
2. append        - N records in blocks of 1,000 (one statement per block, as a batch run does);
3. verify        - `AuditLog.verify()`, the whole chain;
4. search        - one entity's records (`--entity`), and every record a guardrail fired on;
5. archive+prune - the older half to a gzip JSONL archive behind a checkpoint;
6. verify after  - the remaining chain from the checkpoint, plus `verify_archives`.

    python benchmarks/audit.py [--records 20000] [--pg-url postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]

Ratios are records/s against the raw scan in the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _backends, _Database  # noqa: E402 - fresh SQLite file or Postgres database, dropped after

from orchestration.core import clock


def _record(i: int, rng: random.Random) -> dict:
    fired = ["unknown_vendor"] if rng.random() < 0.05 else []
    return {
        "entity_key": f"V{i % 500:04d}/INV{i:07d}",
        "event": {"id": f"evt-{i:07d}", "type": "invoice.received"},
        "context_hash": f"{i:016x}",
        "model": "local",
        "model_version": "local-abc",
        "prompt_version": None,
        "decision": "reject" if fired else "approve",
        "route": "record" if fired else "act",
        "confidence": round(rng.random(), 4),
        "probabilities": {"approve": 0.9, "hold": 0.05, "reject": 0.05},
        "guardrails": {"blocked_by": fired, "flagged_by": [], "decision": "approve"},
        "confidence_breakdown": [{"name": "model_probability_raw", "value": 0.9}] * 3,
        "context_used": {
            "sources": {
                s: {"status": "live", "age_s": 1.0, "freshness": "fresh"}
                for s in ("vendors", "purchase_orders", "payments", "knowledge")
            },
            "policy_passages": [{"doc": "approval.md", "heading": "Limits", "score": 3.1}] * 3,
        },
        "facts": {"amount": rng.random() * 10_000, "vendor_known": True, "po_open": True},
    }


def bench(url: str, n: int, base: Path) -> dict:
    from orchestration.audit.chain import AuditEntry, AuditLog
    from orchestration.audit.retention import archive_and_prune, verify_archives
    from orchestration.core.db import audit_log

    rng = random.Random(7)
    log = AuditLog(url)
    entries = [AuditEntry("decision", f"src:evt-{i:07d}", _record(i, rng), f"b{i // 1000}") for i in range(n)]
    t: dict[str, float] = {}
    started = time.perf_counter()
    for i in range(0, n, 1000):
        log.append(entries[i : i + 1000])
    t["append"] = time.perf_counter() - started

    started = time.perf_counter()
    rows, last = 0, None
    with log.engine.connect() as conn:
        while True:
            q = sa.select(audit_log).order_by(audit_log.c.seq).limit(10_000)
            if last is not None:
                q = q.where(audit_log.c.seq > last)
            page = conn.execute(q).mappings().all()
            if not page:
                break
            rows, last = rows + len(page), page[-1]["seq"]
    t["raw scan"] = time.perf_counter() - started

    started = time.perf_counter()
    assert log.verify().ok
    t["verify"] = time.perf_counter() - started
    started = time.perf_counter()
    assert len(log.search(entity=f"V0007/INV{n // 2 + 7:07d}")) == 1
    t["search entity"] = time.perf_counter() - started
    started = time.perf_counter()
    hits = log.search(guardrail="unknown_vendor", limit=None)
    t["search guardrail"] = time.perf_counter() - started

    with log.engine.begin() as conn:
        conn.execute(
            audit_log.update().where(audit_log.c.seq <= n // 2).values(recorded_at=clock.now() - timedelta(days=400))
        )
    started = time.perf_counter()
    out = archive_and_prune(log, clock.now() - timedelta(days=365), base / f"archive-{uuid.uuid4().hex[:6]}")
    t["archive+prune half"] = time.perf_counter() - started
    started = time.perf_counter()
    assert log.verify().ok and verify_archives(log)["ok"]
    t["verify after prune"] = time.perf_counter() - started
    return {
        "times": t,
        "guardrail_hits": len(hits),
        "pruned": out["pruned"],
        "archive_bytes": Path(out["archive"]).stat().st_size,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument(
        "--pg-url",
        default=os.environ.get("BOSUN_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    )
    args = p.parse_args()
    n = args.records
    base = Path(tempfile.mkdtemp(prefix="bosun-bench-audit-"))
    backends = _backends(args.pg_url)
    print(f"\n{n} decision records, {os.cpu_count()} cores\n")
    print(f"{'db':<9}{'step':<22}{'seconds':>9}{'records/s':>12}{'vs raw scan':>13}")
    for kind in backends:
        db = _Database(kind, base, args.pg_url)
        try:
            res = bench(db.url, n, base)
        finally:
            db.drop()
        t = res["times"]
        baseline = n / t["raw scan"]
        for step, secs in t.items():
            count = n // 2 if step in ("archive+prune half", "verify after prune") else n
            rate = count / secs
            print(f"{kind:<9}{step:<22}{secs:>9.3f}{rate:>12,.0f}{rate / baseline:>12.2f}x")
        print(
            f"{kind:<9}archive {res['archive_bytes'] / 1024:,.0f} KiB for {res['pruned']} records; "
            f"{res['guardrail_hits']} guardrail hits\n"
        )


if __name__ == "__main__":
    main()
