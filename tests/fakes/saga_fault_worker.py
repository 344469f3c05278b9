"""Runs seeded invoice payment sagas against a fault-injected ERP; the process a test kills.

    python saga_fault_worker.py DB_URL N SEED [--kill when:method:n] [--batch 100] [--clean]

Generated data only: one active vendor, one open PO per saga (so prerequisites hold),
sagas "saga-00000".. in batches. A run first recovers what a killed predecessor left,
then runs every batch (settled sagas are read from the log and not touched), and prints
FINISHED. Also used by benchmarks/actions.py.
"""

from __future__ import annotations

import os
import sys
import time

from orchestration.actions import RetryPolicy
from resources.erp import ERPResource
from resources.fault_injection import FaultPlan, FaultyTarget, seeded_plan

from assets.invoices.payment_saga import payment_executor, payment_plan

DO_UNDO = {"post_ledger_entries": "reverse_ledger_entries", "schedule_payments": "cancel_payments"}
STEP_OF = {"post_ledger_entries": "post_ledger_entry", "schedule_payments": "schedule_payment"}


def saga_items(n: int) -> list[dict]:
    return [{"key": f"saga-{i:05d}", "invoice_id": f"INV-{i:05d}", "vendor_id": "V-FAULT", "po_number": f"PO-F{i:05d}",
             "amount": "100.00", "currency": "EUR", "due_on": "2026-12-31"} for i in range(n)]


def seed(erp: ERPResource, n: int) -> None:
    erp.load_master_data(
        [{"vendor_id": "V-FAULT", "name": "Fault Injection GmbH", "country": "DE", "currency": "EUR",
          "risk_tier": "low", "active": True, "iban": "DE02120300000000202051"}],
        [{"po_number": f"PO-F{i:05d}", "vendor_id": "V-FAULT", "amount": "1000.00", "currency": "EUR",
          "status": "open", "opened_on": "2026-01-01"} for i in range(n)])


def fault_plan(n: int, seed_: int, faults: bool) -> FaultPlan:
    if not faults:
        return FaultPlan()
    # A key is what the target sees: the action's idempotency key, "<step>:<saga>".
    return seeded_plan([it["key"] for it in saga_items(n)], DO_UNDO, seed_,
                       key=lambda method, saga: f"{STEP_OF[method]}:{saga}")


def executor(url: str, n: int, seed_: int, faults: bool = True, kill=None, per_call: int = 25):
    erp = ERPResource(url=url)
    plan = fault_plan(n, seed_, faults)
    plan.kill, plan.hang_s = kill, 0.3
    target = FaultyTarget(erp, plan, [*DO_UNDO, *DO_UNDO.values()])
    steps = payment_plan(target, timeout_s=0.15, retry=RetryPolicy(attempts=5, initial_s=0.002, max_s=0.02,
                                                                   jitter_s=0.005))
    for s in steps.steps.values():
        object.__setattr__(s.action, "max_items_per_call", per_call)
    ex = payment_executor(target, url, holder=f"worker-{os.getpid()}", rate=0, limit=None, plan=steps)
    ex.leases.ttl_s = 2.0  # a killed worker's leases lapse quickly; a live one renews per step
    return ex, target


def main(argv: list[str]) -> int:
    url, n, seed_ = argv[0], int(argv[1]), int(argv[2])
    kill = None
    batch = 100
    if "--kill" in argv:
        when, method, k = argv[argv.index("--kill") + 1].split(":")
        kill = (when, method, int(k))
    if "--batch" in argv:
        batch = int(argv[argv.index("--batch") + 1])
    ex, _ = executor(url, n, seed_, faults="--no-faults" not in argv, kill=kill)
    started = time.time()
    ex.recover()
    items = saga_items(n)
    for i in range(0, n, batch):
        ex.run(items[i:i + batch], batch_id=f"fault-{i // batch}")
    print(f"FINISHED {time.time() - started:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
