"""What the outcome checks cost per batch, after a real run of the invoice workflow.

`bosun demo` processes N generated invoices (SQLite, local model) in batches; then, per
batch, each check is timed on the run's real state:

1. baseline        - the batch checks that were there before: every event terminal, no
                     invoice paid twice, no payment over its PO (three queries);
2. reconciliation  - `decisions_reconcile_with_saga_log_and_erp`: inbox, saga log and ERP;
3. ge_context      - Great Expectations, the invoice_context suite on the batch's context frame;
4. ge_outcomes     - the invoice_outcomes suite on the batch's outcome frame (with its ERP read).

Plus the one-off cost of importing Great Expectations in a fresh process (paid by the
first batch of every run process: once per `bosun demo`/runner, once per run when the
daemon launches each run in its own process). Ratios are against the baseline.

    python benchmarks/outcome_checks.py [--events 2000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bosun-bench-outcomes-"))
    os.environ["BOSUN_HOME"] = str(home)
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "BOSUN_LLM_MODEL",
        "BOSUN_DATABASE_URL",
        "BOSUN_ERP_DATABASE_URL",
        "BOSUN_MODEL_DIR",
        "BOSUN_SAMPLE_DIR",
    ):
        os.environ.pop(var, None)
    os.environ["BOSUN_SAMPLE_DIR"] = str(home / "sample")

    cold = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t = time.perf_counter(); import great_expectations; print(time.perf_counter() - t)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    import dagster as dg

    from assets.invoices import data_quality
    from assets.invoices.batch import no_payment_exceeds_po
    from assets.invoices.batch_reconciliation import reconcile_batch
    from assets.invoices.demo import run_demo
    from assets.invoices.workflow import EVENT_TYPES
    from orchestration.action.batch import action_key
    from orchestration.definitions import build_definitions
    from orchestration.trigger.batching import BatchRange
    from orchestration.verification import expectations
    from orchestration.verification.outcome_checks import terminal_states
    from resources.io_managers import IN_RUN_IO_MANAGER

    # The batch runs' own values stay in memory in production; this benchmark keeps them as
    # files under its temporary home, to time the checks on each batch's context and decisions.
    storage = home / "dagster" / "storage"
    defs = build_definitions({IN_RUN_IO_MANAGER: dg.FilesystemIOManager(base_dir=str(storage))})
    summary = run_demo(defs, home, args.events, args.seed)
    db, erp, outbox = defs.resources["bosun_db"], defs.resources["erp"], defs.resources["outbox"]

    per: dict[str, list[float]] = {"baseline": [], "reconciliation": [], "ge_context": [], "ge_outcomes": []}
    sizes = []
    for path in sorted((storage / "invoice_context").iterdir()):
        batch = BatchRange.parse(path.name)
        context = pickle.loads(path.read_bytes())
        decisions = pickle.loads((storage / "invoice_decisions" / path.name).read_bytes())
        sizes.append(len(context))

        def baseline():
            terminal_states(batch, db, EVENT_TYPES)
            erp.invoices_paid_twice()
            no_payment_exceeds_po(erp)

        def outcomes():
            rows = db.inbox().records_between(batch.first, batch.last, EVENT_TYPES)
            keys = [action_key(d["key"], "schedule_payment") for d in decisions]
            paid = {r["idempotency_key"]: r for r in erp.effects_for(keys, []) if r["live"]}
            frame = data_quality.outcomes_frame(decisions, {r["idempotency_key"]: r["status"] for r in rows}, paid)
            assert expectations.validate(frame, data_quality.OUTCOMES_SUITE)["success"]

        per["baseline"].append(_timed(baseline))
        per["reconciliation"].append(_timed(lambda: reconcile_batch(batch, db, erp, outbox)))
        per["ge_context"].append(
            _timed(lambda: expectations.validate(data_quality.context_frame(context), data_quality.CONTEXT_SUITE))
        )
        per["ge_outcomes"].append(_timed(outcomes))
        assert reconcile_batch(batch, db, erp, outbox).ok

    base = statistics.mean(per["baseline"])
    report = {
        "events": args.events,
        "batches": len(sizes),
        "mean_batch_events": round(statistics.mean(sizes), 1),
        "demo_seconds": summary["seconds"],
        "per_batch_ms": {k: round(statistics.mean(v) * 1000, 1) for k, v in per.items()},
        "ratio_to_baseline": {k: round(statistics.mean(v) / base, 2) for k, v in per.items()},
        "ge_import_cold_process_s": round(float(cold.stdout), 2),
        "settlements": {k: summary["settlements"].get(k) for k in ("payments", "verdicts", "failing")},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
