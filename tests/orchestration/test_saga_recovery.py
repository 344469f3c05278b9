"""Acceptance of the action layer under faults: transient errors, lost answers, refusals,
and SIGKILL of the executing process at every step boundary and between a remote
effect and its log record. The final ERP state must equal an oracle from the decisions."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestration.db import review_queue
from orchestration.saga_log import ACTIVE, SagaLog
from resources.erp import ERPResource, ledger_entries, payments

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import saga_fault_worker as worker  # noqa: E402

WORKER = Path(worker.__file__)
# Before a call = at a step boundary (the step is logged running, nothing sent yet);
# after = the effect is at the target and the log does not know.
KILLS = [("before", "post_ledger_entries", 2), ("after", "post_ledger_entries", 5),
         ("before", "schedule_payments", 3), ("after", "schedule_payments", 6),
         ("before", "reverse_ledger_entries", 1), ("after", "reverse_ledger_entries", 2),
         ("after", "post_ledger_entries", 1), ("after", "schedule_payments", 1)]


def _run_worker(url: str, n: int, seed: int, kill=None) -> str:
    """Run the worker; SIGKILL it by its pid when it reaches the kill point. Returns how it ended."""
    args = [sys.executable, str(WORKER), url, str(n), str(seed)]
    if kill:
        args += ["--kill", ":".join(map(str, kill))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("KILLPOINT"):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return "killed"
            if line.startswith("FINISHED"):
                assert proc.wait(timeout=30) == 0
                return "finished"
        raise AssertionError(f"worker ended without finishing: exit {proc.wait(timeout=30)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _oracle(n: int, seed: int) -> dict:
    plan = worker.fault_plan(n, seed, True)
    expect = {"ledger": set(), "payments": set(), "status": {}}
    for it in worker.saga_items(n):
        s = it["key"]
        post, pay = f"post_ledger_entry:{s}", f"schedule_payment:{s}"
        if ("post_ledger_entries", post) in plan.permanent:
            expect["status"][s] = "compensated"
            continue
        if ("schedule_payments", pay) in plan.permanent:
            if ("reverse_ledger_entries", post) in plan.permanent:
                expect["status"][s] = "escalated"
                expect["ledger"].add(post)
            else:
                expect["status"][s] = "compensated"
        else:
            expect["status"][s] = "done"
            expect["ledger"].add(post)
            expect["payments"].add(pay)
    return expect


@pytest.fixture(params=["sqlite", "postgres"])
def target_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'faults.db'}"
    return request.getfixturevalue("pg_url")


def test_killed_and_faulty_runs_end_exactly_as_the_oracle_says(target_url):
    n, seed = (1200, 5) if target_url.startswith("sqlite") else (400, 3)
    erp = ERPResource(url=target_url)
    worker.seed(erp, n)
    outcomes = [_run_worker(target_url, n, seed, kill) for kill in KILLS]
    assert outcomes.count("killed") >= 6, outcomes
    assert _run_worker(target_url, n, seed) == "finished"

    expect = _oracle(n, seed)
    with erp.engine.connect() as conn:
        live_ledger = {k for (k,) in conn.execute(sa.select(ledger_entries.c.idempotency_key)
                                                  .where(ledger_entries.c.status == "posted"))}
        live_pay = {k for (k,) in conn.execute(sa.select(payments.c.idempotency_key)
                                               .where(payments.c.status == "scheduled"))}
        per_invoice = [conn.execute(sa.select(sa.func.count()).select_from(t).group_by(t.c.invoice_id)
                                    .order_by(sa.func.count().desc()).limit(1)).scalar_one()
                       for t in (ledger_entries, payments)]
        states = {s for t in (ledger_entries, payments) for (s,) in conn.execute(sa.select(t.c.status).distinct())}
        escalations = {r for (r,) in conn.execute(sa.select(review_queue.c.idempotency_key))}
    assert live_ledger == expect["ledger"] and live_pay == expect["payments"]
    # Nothing applied twice: at most one entry and one payment per invoice, ever (a voided
    # one included: a cancel may consume a key whose write never arrived).
    assert per_invoice == [1, 1] and states <= {"posted", "reversed", "scheduled", "cancelled"}
    log = SagaLog(target_url).load(sorted(expect["status"]))
    assert {k: v["status"] for k, v in log.items()} == expect["status"]
    assert not [k for k, v in log.items() if v["status"] in ACTIVE]
    escalated = [k for k, v in expect["status"].items() if v == "escalated"]
    assert escalated and all(log[k]["reason"].startswith("rollback failed at post_ledger_entry") for k in escalated)
    assert {f"rollback:{k}" for k in escalated} <= escalations
    # The faults were real: some of each kind happened.
    statuses = list(expect["status"].values())
    assert statuses.count("compensated") > 50 and statuses.count("done") > n // 2
