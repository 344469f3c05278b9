"""Runs seeded invoice payment sagas against a fault-injected ERP and outbox; the process a test kills.

    python saga_fault_worker.py DB_URL N SEED [--kill when:what:n] [--batch 100] [--no-faults]
        [--first I] [--start-at I] [--prefix saga] [--holder NAME] [--journal] [--lease-ttl 2.0] [--wait-go]
    python saga_fault_worker.py --serve

Generated data only: one active vendor, one open PO per invoice (so prerequisites hold),
sagas "<prefix>-<I>" for invoices I = first..first+N-1, in batches. A run first recovers
what a killed predecessor left, then runs every batch (settled sagas are read from the log
and not touched), hands queued notices to the outbox's relay after each batch, retries
what another process's leases made it defer, and prints FINISHED.

--kill: "before:METHOD:n" / "after:METHOD:n" around the n-th call of a target method;
"logged:WHAT:n" after the n-th saga-log write of WHAT ("plan", "status:done",
"step:post_ledger_entry:done", ...), before the executor's next write.
--start-at begins with invoice I and wraps around (two processes meet on their overlap).
--journal writes every item each target applied, with --holder, to the database.
--wait-go prints READY and waits for a line on stdin (two processes start together).
--serve imports once and forks one child per line of JSON arguments on stdin (printing
CHILD pid, then EXITED pid code): a killed run costs a fork instead of an interpreter.
Also used by benchmarks/actions.py.
"""

from __future__ import annotations

import json
import os
import sys
import time

from assets.invoices.erp import ERPResource
from assets.invoices.payment_saga import payment_executor, payment_plan
from orchestration.action.actions import RetryPolicy
from orchestration.action.saga_log import SagaLog
from resources.fault_injection import FaultPlan, FaultySagaLog, FaultyTarget, seeded_plan
from resources.outbox import NotificationOutbox

DO_UNDO = {
    "post_ledger_entries": "reverse_ledger_entries",
    "schedule_payments": "cancel_payments",
    "queue_notifications": "retract_notifications",
}
STEP_OF = {
    "post_ledger_entries": "post_ledger_entry",
    "schedule_payments": "schedule_payment",
    "queue_notifications": "notify_vendor",
}
ERP_METHODS = ["post_ledger_entries", "reverse_ledger_entries", "schedule_payments", "cancel_payments"]
OUTBOX_METHODS = ["queue_notifications", "retract_notifications"]


def saga_items(n: int, first: int = 0, prefix: str = "saga") -> list[dict]:
    return [
        {
            "key": f"{prefix}-{i:05d}",
            "invoice_id": f"INV-{i:05d}",
            "vendor_id": "V-FAULT",
            "po_number": f"PO-F{i:05d}",
            "amount": "100.00",
            "currency": "EUR",
            "due_on": "2026-12-31",
        }
        for i in range(first, first + n)
    ]


def seed(erp: ERPResource, n: int) -> None:
    erp.load_master_data(
        [
            {
                "vendor_id": "V-FAULT",
                "name": "Fault Injection GmbH",
                "country": "DE",
                "currency": "EUR",
                "risk_tier": "low",
                "active": True,
                "iban": "DE02120300000000202051",
            }
        ],
        [
            {
                "po_number": f"PO-F{i:05d}",
                "vendor_id": "V-FAULT",
                "amount": "1000.00",
                "currency": "EUR",
                "status": "open",
                "opened_on": "2026-01-01",
            }
            for i in range(n)
        ],
    )


def fault_plan(n: int, seed_: int, faults: bool) -> FaultPlan:
    if not faults:
        return FaultPlan()
    # A key is what the target sees: the action's idempotency key, "<step>:<saga>".
    return seeded_plan(
        [it["key"] for it in saga_items(n)], DO_UNDO, seed_, key=lambda method, saga: f"{STEP_OF[method]}:{saga}"
    )


class Targets:
    """The fault-injected ERP and outbox of one executor; `calls` is both, in time order."""

    def __init__(self, erp: FaultyTarget, outbox: FaultyTarget, log: FaultySagaLog):
        self.erp, self.outbox, self.log = erp, outbox, log

    @property
    def calls(self) -> list:
        return sorted(self.erp.calls + self.outbox.calls, key=lambda c: c[1])


def executor(
    url: str,
    n: int,
    seed_: int,
    faults: bool = True,
    kill=None,
    per_call: int = 25,
    holder: str | None = None,
    journal: bool = False,
    lease_ttl: float = 2.0,
):
    plan = fault_plan(n, seed_, faults)
    plan.kill, plan.hang_s = kill, 0.3
    holder = holder or f"worker-{os.getpid()}"
    journal_url = url if journal else None
    erp = FaultyTarget(ERPResource(url=url), plan, ERP_METHODS, journal_url, holder)
    outbox = FaultyTarget(NotificationOutbox(url=url), plan, OUTBOX_METHODS, journal_url, holder)
    fast = RetryPolicy(attempts=5, initial_s=0.002, max_s=0.02, jitter_s=0.005)
    steps = payment_plan(erp, outbox, timeout_s=0.15, retry=fast, notify_timeout_s=0.15, notify_retry=fast)
    for s in steps.steps.values():
        object.__setattr__(s.action, "max_items_per_call", per_call)
    log = FaultySagaLog(SagaLog(url), plan)
    ex = payment_executor(erp, url, holder=holder, rate=0, limit=None, plan=steps, outbox=outbox, log=log)
    ex.leases.ttl_s = lease_ttl  # a killed worker's leases lapse quickly; a live one renews per step
    return ex, Targets(erp, outbox, log)


def _opt(argv: list[str], name: str, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


def main(argv: list[str]) -> int:
    url, n, seed_ = argv[0], int(argv[1]), int(argv[2])
    kill = None
    if "--kill" in argv:
        when, *what, k = _opt(argv, "--kill").split(":")
        kill = (when, ":".join(what), int(k))
    batch, first, prefix = (
        int(_opt(argv, "--batch", 100)),
        int(_opt(argv, "--first", 0)),
        _opt(argv, "--prefix", "saga"),
    )
    ex, _ = executor(
        url,
        n,
        seed_,
        faults="--no-faults" not in argv,
        kill=kill,
        holder=_opt(argv, "--holder"),
        journal="--journal" in argv,
        lease_ttl=float(_opt(argv, "--lease-ttl", 2.0)),
    )
    relay = NotificationOutbox(url=url)
    if "--wait-go" in argv:
        print("READY", flush=True)
        sys.stdin.readline()
    started = time.time()
    ex.recover()
    items = saga_items(n, first, prefix)
    start_at = int(_opt(argv, "--start-at", first)) - first
    items = items[start_at:] + items[:start_at]
    deferred: list[dict] = []
    for i in range(0, n, batch):
        out = ex.run(items[i : i + batch], batch_id=f"{prefix}-{i // batch}")
        deferred += [it for it in items[i : i + batch] if it["key"] in set(out.deferred)]
        relay.dispatch()
    deadline = time.monotonic() + 60
    while deferred and time.monotonic() < deadline:  # another process held them: the next run takes them
        out = ex.run(deferred, batch_id=f"{prefix}-deferred")
        deferred = [it for it in deferred if it["key"] in set(out.deferred)]
    relay.dispatch()
    print(f"FINISHED {time.time() - started:.3f} deferred={len(deferred)}", flush=True)
    return 0 if not deferred else 3


def serve() -> int:
    """One child process per request, forked from this already-imported interpreter."""
    import traceback

    print("READY", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = main(json.loads(line))
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"CHILD {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"EXITED {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main(sys.argv[1:]))
