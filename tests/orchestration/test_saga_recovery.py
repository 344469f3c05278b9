"""Acceptance of the action layer under faults: transient errors, lost answers, refusals,
and SIGKILL of the executing process at every step boundary, between a remote effect and
its log record, and between any two writes of the saga log. The final ERP ledger,
payments and notification outbox must equal an oracle computed from the decisions."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from assets.invoices.erp import ERPResource, ledger_entries, payments
from orchestration.action.saga_log import ACTIVE, SagaLog
from orchestration.core.db import review_queue
from resources.outbox import notifications

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import saga_fault_worker as worker  # noqa: E402

WORKER = Path(worker.__file__)
# Before a call = at a step boundary (the step is logged running, nothing sent yet);
# after = the effect is at the target and the log does not know.
EFFECT_KILLS = [
    ("before", "post_ledger_entries", 2),
    ("after", "post_ledger_entries", 5),
    ("before", "schedule_payments", 3),
    ("after", "schedule_payments", 6),
    ("before", "queue_notifications", 2),
    ("after", "queue_notifications", 3),
    ("before", "reverse_ledger_entries", 1),
    ("after", "reverse_ledger_entries", 2),
    ("after", "post_ledger_entries", 1),
    ("after", "schedule_payments", 1),
    ("after", "cancel_payments", 1),
    ("after", "queue_notifications", 1),
]
# Between two saga-log writes: the first has committed, the next has not started. Every
# kind of write the executor makes, forward and backward, each followed by its successor.
# Counted per process from its start, so a low count stops a run early in its recovery
# of the last one's leftovers or in its first unsettled batch: each run moves on a little.
LOG_KILLS = [
    ("logged", "status:escalated", 1),  # escalated (after its review item)
    ("logged", "plan", 2),  # planned / not running
    ("logged", "status:running", 1),  # running / step 1 not running
    ("logged", "step:post_ledger_entry:running", 1),  # step running / not called
    ("logged", "step:post_ledger_entry:done", 1),  # step 1 done / step 2 not running
    ("logged", "step:schedule_payment:running", 1),
    ("logged", "step:schedule_payment:done", 1),  # step 2 done / step 3 not running
    ("logged", "step:schedule_payment:failed", 1),  # failed / saga not compensating
    ("logged", "step:notify_vendor:running", 1),
    ("logged", "step:notify_vendor:done", 1),  # last step done / saga not done
    ("logged", "status:done", 1),  # saga done / failures not compensating
    ("logged", "status:compensating", 1),  # compensating / no step compensating
    ("logged", "step:schedule_payment:compensating", 1),  # compensating / not called
    ("logged", "step:schedule_payment:compensated", 1),  # undone / previous step not compensating
    ("logged", "step:post_ledger_entry:compensated", 1),  # all undone / saga not settled
    ("logged", "status:compensated", 1),  # settled / next batch not planned
    ("logged", "step:notify_vendor:failed", 1),
    ("logged", "step:post_ledger_entry:done", 2),
    ("logged", "step:schedule_payment:done", 2),
]
KILLS = LOG_KILLS + EFFECT_KILLS


class WorkerServer:
    """The worker's fork server: each run is a child process, SIGKILLed by its pid at its
    kill point; the server (and any child) is stopped by its own pid at the end."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout.readline().strip() == "READY"

    def run(self, url: str, n: int, seed: int, kill=None) -> str:
        args = [url, str(n), str(seed), "--lease-ttl", "0.25", "--batch", "50"]
        if kill:
            args += ["--kill", ":".join(map(str, kill))]
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        ended = None
        for line in self.proc.stdout:
            if line.startswith("KILLPOINT"):
                os.kill(int(line.rsplit("pid=", 1)[1]), signal.SIGKILL)
                ended = "killed"
            elif line.startswith("FINISHED"):
                ended = "finished"
            elif line.startswith("EXITED"):
                code = int(line.split()[2])
                assert ended and code == (-signal.SIGKILL if ended == "killed" else 0), (line, ended)
                return ended
        raise AssertionError(f"worker server ended: exit {self.proc.wait(timeout=30)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def _oracle(n: int, seed: int) -> dict:
    """What the decisions and the seeded faults say must be in effect at the end.
    Steps run in order; a refused step undoes the earlier ones in reverse; an undo the
    target refuses stops the rollback there and escalates, leaving what was not undone."""
    plan = worker.fault_plan(n, seed, True)
    expect = {"ledger": set(), "payments": set(), "notices": set(), "status": {}}
    steps = [
        ("post_ledger_entries", "reverse_ledger_entries", "ledger", "post_ledger_entry"),
        ("schedule_payments", "cancel_payments", "payments", "schedule_payment"),
        ("queue_notifications", "retract_notifications", "notices", "notify_vendor"),
    ]
    for it in worker.saga_items(n):
        s = it["key"]
        done = []
        for do, undo, where, step in steps:
            if (do, f"{step}:{s}") in plan.permanent:
                break
            done.append((undo, where, f"{step}:{s}"))
        else:
            expect["status"][s] = "done"
            for _, where, key in done:
                expect[where].add(key)
            continue
        expect["status"][s] = "compensated"
        for i, (undo, _, key) in enumerate(reversed(done)):
            if (undo, key) in plan.permanent:
                expect["status"][s] = "escalated"
                for _, where, left in done[: len(done) - i]:
                    expect[where].add(left)
                break
    return expect


def test_killed_and_faulty_runs_end_exactly_as_the_oracle_says(db_url):
    # Every kill point on the embedded database; on Postgres (slower per write) the points
    # between log writes and those around the forward steps' effects.
    n, seed, kills = (
        (1200, 5, KILLS)
        if db_url.startswith("sqlite")
        else (600, 4, LOG_KILLS[:1] + EFFECT_KILLS[:6] + LOG_KILLS[1:-2])
    )
    erp = ERPResource(url=db_url)
    worker.seed(erp, n)
    server = WorkerServer()
    try:
        outcomes = {kill: server.run(db_url, n, seed, kill) for kill in kills}
        assert server.run(db_url, n, seed) == "finished"
    finally:
        server.stop()
    # Every kill point was reached: each run died there, and the next one picked up.
    assert set(outcomes.values()) == {"killed"}, [k for k, v in outcomes.items() if v != "killed"]

    expect = _oracle(n, seed)
    with erp.engine.connect() as conn:

        def live(table, status):
            return {k for (k,) in conn.execute(sa.select(table.c.idempotency_key).where(table.c.status.in_(status)))}

        live_ledger, live_pay = live(ledger_entries, ["posted"]), live(payments, ["scheduled"])
        live_notices = live(notifications, ["queued", "dispatched"])
        per_invoice = [
            conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(cond)
                .group_by(col)
                .order_by(sa.func.count().desc())
                .limit(1)
            ).scalar_one()
            for t, col, cond in (
                (ledger_entries, ledger_entries.c.invoice_id, sa.true()),
                (payments, payments.c.invoice_id, sa.true()),
                (notifications, notifications.c.entity, notifications.c.kind == "notice"),
            )
        ]
        states = {
            s
            for t in (ledger_entries, payments, notifications)
            for (s,) in conn.execute(sa.select(t.c.status).distinct())
        }
        escalations = {r for (r,) in conn.execute(sa.select(review_queue.c.idempotency_key))}
    assert live_ledger == expect["ledger"] and live_pay == expect["payments"]
    assert live_notices == expect["notices"]
    # Nothing applied twice: at most one entry, one payment and one notice per invoice,
    # ever (a voided one included: an undo may consume a key whose write never arrived).
    assert per_invoice == [1, 1, 1]
    assert states <= {"posted", "reversed", "scheduled", "cancelled", "queued", "dispatched"}
    log = SagaLog(db_url).load(sorted(expect["status"]))
    assert {k: v["status"] for k, v in log.items()} == expect["status"]
    assert not [k for k, v in log.items() if v["status"] in ACTIVE]
    # Every saga that did not finish says why.
    assert all(v["failed_step"] and v["reason"] for v in log.values() if v["status"] != "done")
    escalated = [k for k, v in expect["status"].items() if v == "escalated"]
    assert escalated and all(log[k]["reason"].startswith("rollback failed at ") for k in escalated)
    assert {f"rollback:{k}" for k in escalated} <= escalations
    # The faults were real: some of each kind happened.
    statuses = list(expect["status"].values())
    assert statuses.count("compensated") > 50 and statuses.count("done") > n // 2
    assert any(log[k]["failed_step"] == "notify_vendor" for k in expect["status"] if expect["status"][k] != "done")
