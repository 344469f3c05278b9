"""The invoice payment saga on the durable executor: rate limit, leases, preview,
approval and rollback, against the real SQL ERP."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.invoices.erp import ERPResource, ledger_entries, payments
from orchestration.action.saga_log import SagaLog
from orchestration.core.batch_assets import PREVIEW_TAG

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fakes"))
import saga_fault_worker as worker  # noqa: E402


def _executors(url, n_runs, per_call, rate=0, wait=10.0):
    out = []
    for _ in range(n_runs):
        ex, target = worker.executor(url, 0, 0, faults=False, per_call=per_call)
        if rate:
            from orchestration.action.rate_limit import RateLimiter

            ex.limiters = {"erp": RateLimiter(url, "erp", rate)}
        ex.leases.holder = f"run-{len(out)}"
        ex.lease_wait_s = wait
        out.append((ex, target))
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def erp_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    worker.seed(ERPResource(url=url), 2000)
    return url


def test_two_runs_share_one_rate_limit_never_exceeded_in_any_second(erp_url):
    rate, items = 60, worker.saga_items(2000)
    runs = _executors(erp_url, 2, per_call=25, rate=rate)
    threads = [
        threading.Thread(target=ex.run, args=(items[i * 1000 : (i + 1) * 1000], f"b{i}"))
        for i, (ex, _) in enumerate(runs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    at = sorted(when for _, targets in runs for _, when, _ in targets.erp.calls)  # measured at the ERP
    # Two ERP steps of 1,000 sagas per run in calls of 25 (the outbox is another target). A call
    # that timed out on a loaded host is retried, and the retry is a call too (idempotent at the
    # ERP): at least that many, and every one of them counted against the limit below.
    assert len(at) >= 2 * 2000 // 25
    busiest = max(sum(1 for t in at[i:] if t < start + 1.0) for i, start in enumerate(at))
    assert busiest <= rate
    assert at[-1] - at[0] >= (len(at) - rate) / rate  # it was the limiter that paced them
    assert SagaLog(erp_url).counts("invoices") == {"done": 2000}


def test_two_runs_on_overlapping_entities_never_both_act_on_one(erp_url):
    items = worker.saga_items(300)
    (a, ta), (b, tb) = _executors(erp_url, 2, per_call=10)
    outs = {}
    threads = [
        threading.Thread(target=lambda: outs.__setitem__("a", a.run(items[:200], "a"))),
        threading.Thread(target=lambda: outs.__setitem__("b", b.run(items[100:], "b"))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    acted_a = {k.split(":", 1)[1] for name, _, keys in ta.calls for k in keys}
    acted_b = {k.split(":", 1)[1] for name, _, keys in tb.calls for k in keys}
    assert acted_a.isdisjoint(acted_b)
    assert acted_a | acted_b == {it["key"] for it in items}
    assert SagaLog(erp_url).counts("invoices") == {"done": 300}


def _worker_process(url: str, prefix: str, first: int, n: int, start_at: int) -> subprocess.Popen:
    args = [
        sys.executable,
        worker.__file__,
        url,
        str(n),
        "0",
        "--no-faults",
        "--first",
        str(first),
        "--start-at",
        str(start_at),
        "--prefix",
        prefix,
        "--holder",
        f"process-{prefix}",
        "--journal",
        "--wait-go",
        "--batch",
        "50",
    ]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_two_processes_on_overlapping_invoices_never_both_act_on_one(erp_url):
    """Two OS processes, each with its own sagas (its own idempotency keys) for invoices
    0-199 and 100-299: only the leases and the prerequisites read under them stop both
    from paying invoices 100-199. Judged from the target tables, the saga log and the
    journal of what each process's calls applied at the target."""
    from assets.invoices.payment_saga import entities
    from orchestration.action.leases import Leases
    from resources.fault_injection import target_journal
    from resources.outbox import notifications

    # Both begin with invoices 100-149, then go their own ways. The test holds those
    # invoices' leases until both processes have planned their sagas for them, so the two
    # really meet there however the machine schedules them.
    gate = Leases(erp_url, "test-gate")
    overlap = [e for it in worker.saga_items(50, 100) for e in entities(it)]
    assert gate.try_acquire(overlap) == set(overlap)
    procs = [_worker_process(erp_url, "a", 0, 200, 100), _worker_process(erp_url, "b", 100, 200, 100)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["READY", "READY"]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        both_planned = [f"{prefix}-{i:05d}" for prefix in "ab" for i in range(100, 150)]
        deadline = time.monotonic() + 60
        while len(SagaLog(erp_url).load(both_planned)) < len(both_planned):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "sagas never planned"
            time.sleep(0.05)
        gate.release()
        for p in procs:
            assert p.stdout.readline().startswith("FINISHED") and p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)

    erp = ERPResource(url=erp_url)
    invoices = {f"INV-{i:05d}" for i in range(300)}
    with erp.engine.connect() as conn:
        for table, entity, live in (
            (ledger_entries, ledger_entries.c.invoice_id, "posted"),
            (payments, payments.c.invoice_id, "scheduled"),
            (notifications, notifications.c.entity, "queued"),
        ):
            rows = conn.execute(sa.select(entity, table.c.status)).all()
            # Each invoice acted on exactly once overall, and the one write took effect.
            assert sorted(inv for inv, _ in rows) == sorted(invoices), table.name
            assert {st for _, st in rows} <= {live, "dispatched"}, table.name
        journal = conn.execute(
            sa.select(target_journal.c.holder, target_journal.c.method, target_journal.c.item_key, target_journal.c.at)
        ).all()
    by_invoice: dict[str, set] = {}
    for holder, method, key, _ in journal:
        by_invoice.setdefault("INV-" + key.rsplit("-", 1)[1], set()).add(holder)
    assert set(by_invoice) == invoices and all(len(h) == 1 for h in by_invoice.values())  # never both
    log = SagaLog(erp_url).load([f"{p}-{i:05d}" for p, r in (("a", range(200)), ("b", range(100, 300))) for i in r])
    for i in range(300):
        sagas = [log[k] for k in (f"a-{i:05d}", f"b-{i:05d}") if k in log]
        assert [s["status"] for s in sagas].count("done") == 1, i
        refused = [s for s in sagas if s["status"] != "done"]
        # A business refusal, not a failure: the rule that refused is its failed_step.
        assert all(
            s["status"] == "refused" and s["failed_step"] == "already_paid" and "already paid" in s["reason"]
            for s in refused
        ), refused
    assert sum(1 for s in log.values() if s["status"] == "refused") == 100
    # They met: on the gated invoices each saga was planned while the other was in flight.
    contended = [
        i
        for i in range(100, 150)
        if log[f"a-{i:05d}"]["created_at"] < log[f"b-{i:05d}"]["updated_at"]
        and log[f"b-{i:05d}"]["created_at"] < log[f"a-{i:05d}"]["updated_at"]
    ]
    assert len(contended) == 50


def test_a_run_that_cannot_get_the_lease_defers_and_acts_on_nothing(erp_url):
    items = worker.saga_items(5)
    (a, ta), (b, tb) = _executors(erp_url, 2, per_call=10, wait=0.2)
    a.leases.try_acquire([e for it in items for e in worker_entities(it)])
    out = b.run(items, "b")
    assert sorted(out.deferred) == [it["key"] for it in items] and tb.calls == []
    a.leases.release()
    assert sorted(b.run(items, "b").done) == [it["key"] for it in items]


def worker_entities(params):
    from assets.invoices.payment_saga import entities

    return entities(params)


def test_prerequisites_are_checked_before_the_first_step(erp_url):
    items = worker.saga_items(3)
    items[0] = {**items[0], "vendor_id": "V-NOPE"}
    items[1] = {**items[1], "amount": "5000.00"}  # the PO holds 1000
    ((ex, target),) = _executors(erp_url, 1, per_call=10)
    out = ex.run(items, "p")
    assert out.done == [items[2]["key"]]
    # A vendor the ERP does not know is for a person (a dead letter); a PO without enough
    # left is a business refusal (a decision: hold), not a failure.
    assert "does not exist" in out.failed[items[0]["key"]]["error"]
    assert items[1]["key"] not in out.failed
    assert out.refused[items[1]["key"]]["code"] == "po_exhausted" and "left" in out.refused[items[1]["key"]]["reason"]
    assert {k for _, _, keys in target.calls for k in keys} == {
        f"post_ledger_entry:{items[2]['key']}",
        f"schedule_payment:{items[2]['key']}",
        f"notify_vendor:{items[2]['key']}",
    }


def test_an_invoice_paid_meanwhile_is_refused_as_a_decision_not_dead_lettered(erp_url):
    """A resubmitted invoice paid by a concurrent batch (under another event's key) after this
    batch decided: the prerequisite refuses it for a business reason, the event ends `done`
    with decision reject and the reason, audited, and nothing reaches the dead-letter table."""
    from assets.invoices.actions import ACTIONS
    from assets.invoices.payment_saga import REFUSAL_DECISIONS
    from orchestration.action.batch import audit_entries, outcomes
    from orchestration.trigger.dead_letters import DeadLetters

    first = worker.saga_items(1)[0]
    again = {**first, "key": "resubmitted-00000"}  # the same invoice under another event's key
    ((ex, target),) = _executors(erp_url, 1, per_call=10)
    assert ex.run([first], "b1").done == [first["key"]]
    calls_before = len(target.calls)
    out = ex.run([again], "b2")
    assert out.failed == {} and out.done == [] and len(target.calls) == calls_before  # nothing acted
    assert out.refused == {
        again["key"]: {
            "code": "already_paid",
            "reason": f"invoice {first['invoice_id']} is already paid (schedule_payment:{first['key']})",
        }
    }
    log = SagaLog(erp_url).load([again["key"]])[again["key"]]
    assert (log["status"], log["failed_step"]) == ("refused", "already_paid")
    # The batch's replay reads the settled refusal back from the log, the same way.
    assert ex.run([again], "b2").refused == out.refused

    decision = {"key": again["key"], "route": "act", "entity_key": "V-FAULT:INV-00000"}
    states = outcomes([decision], out, ACTIONS)
    assert states == [
        {
            "key": again["key"],
            "status": "done",
            "reason": f"refused at execution (already_paid): {out.refused[again['key']]['reason']}",
            "outcome": {"decision": REFUSAL_DECISIONS["already_paid"], "refusal": "already_paid"},
        }
    ]
    assert states[0]["outcome"]["decision"] == "reject"
    decision.update(
        event={},
        context_hash="h",
        context_used={},
        model="local",
        model_version="1",
        prompt_version="p",
        decision_type="t",
        route_reason="r",
        latency_s=0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0,
        cache_hit=False,
        decision="approve",
        probabilities={},
        confidence=0.9,
        confidence_breakdown=[],
        calibrator_version="c",
        guardrails={"blocked_by": [], "flagged_by": []},
        final_decision="approve",
        reason="approve",
        facts={},
        invoice={"line_items": []},
    )
    outcome = [e for e in audit_entries([decision], out, states, "b2", ACTIONS) if e.kind == "outcome"]
    assert [(e.subject, e.record["status"], e.record["decision"], e.record["refusal"]) for e in outcome] == [
        (again["key"], "done", "reject", "already_paid")
    ]
    assert DeadLetters(erp_url).list(status=None) == []


def test_partial_rollback_undoes_the_step_and_what_depends_on_it_verified(erp_url):
    from resources.outbox import NotificationOutbox, correction_key

    items = worker.saga_items(3)
    ((ex, _),) = _executors(erp_url, 1, per_call=10)
    outbox = NotificationOutbox(url=erp_url)
    ex.run(items[:2], "r")
    sent = outbox.dispatch()  # the relay sends both notices
    ex.run(items[2:], "r2")  # this one's notice is still queued
    assert {m["idempotency_key"] for m in sent} == {f"notify_vendor:{it['key']}" for it in items[:2]}
    k, q = items[0]["key"], items[2]["key"]
    out = ex.rollback(k, ["schedule_payment"])
    assert out.failed[k]["compensated"] == ["notify_vendor", "schedule_payment"]  # the notice depends on it
    erp = ERPResource(url=erp_url)
    assert erp.live_payment_keys([f"schedule_payment:{k}"]) == set()
    assert erp.live_ledger_keys([f"post_ledger_entry:{k}"]) == {f"post_ledger_entry:{k}"}
    # A notice already sent cannot be unsent: it is kept, retracted, and a correction follows.
    notice, correction = outbox.messages_about(items[0]["invoice_id"])
    assert (notice["idempotency_key"], notice["status"]) == (f"notify_vendor:{k}", "retracted")
    assert (correction["idempotency_key"], correction["kind"], correction["status"], correction["corrects"]) == (
        correction_key(f"notify_vendor:{k}"),
        "correction",
        "queued",
        f"notify_vendor:{k}",
    )
    out = ex.rollback(k, ["post_ledger_entry"])
    assert out.failed[k]["compensated"] == ["post_ledger_entry"]
    log = SagaLog(erp_url).load([k])[k]
    assert log["status"] == "compensated" and set(s for s, _ in log["steps"].values()) == {"compensated"}
    # A notice still queued is cancelled: it never leaves, and no correction is needed.
    assert ex.rollback(q).failed[q]["compensated"] == ["notify_vendor", "schedule_payment", "post_ledger_entry"]
    assert [(m["kind"], m["status"]) for m in outbox.messages_about(items[2]["invoice_id"])] == [
        ("notice", "cancelled")
    ]
    assert [m["idempotency_key"] for m in outbox.dispatch()] == [correction_key(f"notify_vendor:{k}")]


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_preview_executes_nothing_and_shows_the_plans(world):
    world.ingest_sample()
    from assets.invoices.workflow import invoice_batches

    key = "00000001-00000300"
    world.instance.add_dynamic_partitions(invoice_batches.name, [key])
    from assets.invoices import context_assets

    dg.materialize(context_assets, instance=world.instance, resources=world.resources)
    result = world.defs.resolve_job_def("invoice_batch_job").execute_in_process(
        partition_key=key, instance=world.instance, tags={PREVIEW_TAG: "true"}
    )
    assert result.success
    meta = result.asset_materializations_for_node("invoice_actions")[0].metadata
    assert meta["preview"].value is True and meta["planned_sagas"].value > 100
    plans = meta["plans"].value
    assert [s["step"] for s in plans[0]["steps"]] == ["post_ledger_entry", "schedule_payment", "notify_vendor"]
    erp = world.resources["erp"]
    with erp.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger_entries)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(payments)).scalar_one() == 0
    assert SagaLog(world.resources["bosun_db"].resolved_url).counts() == {}
    # The events wait for the real run: none reached a terminal state.
    assert set(world.resources["bosun_db"].inbox().counts()["by_status"]) <= {
        "received",
        "rejected",
        "duplicate",
        "debounced",
        "stale",
    }


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_an_approval_gated_plan_executes_only_after_approval_once(world, monkeypatch, capsys):
    from orchestration.cli import main

    monkeypatch.setenv("BOSUN_INVOICE_APPROVAL_LIMIT", "2000")
    world.ingest_sample()
    report = world.run_pending()
    assert not report.failed
    db = world.resources["bosun_db"]
    waiting = [r for r in db.review_queue().pending(1000) if r["proposal"].get("kind") == "saga_approval"]
    assert waiting
    item = waiting[0]
    saga_id = item["proposal"]["saga_id"]
    pay_key = f"schedule_payment:{saga_id}"
    erp = world.resources["erp"]
    assert erp.live_payment_keys([pay_key]) == set()
    assert all(float(p["amount"]) <= 2000 for p in erp.live_payments())
    assert main(["review", "approve", str(item["id"]), "--by", "alice"]) == 0
    assert erp.live_payment_keys([pay_key]) == {pay_key}
    log = SagaLog(db.resolved_url).load([saga_id])[saga_id]
    assert log["status"] == "done" and log["approved_by"] == "alice"
    approvals = [r for r in db.audit().records_for(saga_id) if r["kind"] == "approval"]
    assert [r["record"]["approved_by"] for r in approvals] == ["alice"]
    assert main(["review", "approve", str(item["id"]), "--by", "bob"]) == 3  # refused: it acts on nothing
    with erp.engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).select_from(payments).where(payments.c.idempotency_key == pay_key)
        ).scalar_one()
    assert n == 1 and SagaLog(db.resolved_url).load([saga_id])[saga_id]["approved_by"] == "alice"
    state = [
        e for e in db.inbox().events_between(1, 10_000, ["invoice.received"], statuses=("done",)) if e.key == saga_id
    ]
    assert state


class ProcessDied(BaseException):
    """Stands for the process dying: nothing in the executor may catch it."""


class DiesAfterSchedulingPayments(ERPResource):
    def schedule_payments(self, items):
        super().schedule_payments(items)
        raise ProcessDied("killed between the payment and its log record")


def _crash_one_batch(world):
    from orchestration.definitions import build_definitions

    world.ingest_sample()
    report = world.run_pending(build_definitions({"erp": DiesAfterSchedulingPayments()}))
    assert report.failed
    db = world.resources["bosun_db"]
    log = SagaLog(db.resolved_url)
    running = log.unfinished("invoices")
    assert running  # the log knows what was in flight
    erp = world.resources["erp"]
    paid_before = {p["idempotency_key"] for p in erp.live_payments()}
    assert paid_before  # and the effects are at the target
    return log, running, report.failed


def _assert_paid_once(world, log, running):
    erp = world.resources["erp"]
    keys = [f"schedule_payment:{r['saga_id']}" for r in running]
    assert erp.live_payment_keys(keys) == set(keys)
    assert erp.invoices_paid_twice() == []
    assert log.unfinished("invoices") == []


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_next_run_of_the_batch_finishes_what_a_dead_run_started(world):
    log, running, failed = _crash_one_batch(world)
    job = world.defs.resolve_job_def("invoice_batch_job")
    for key in failed:  # the events are still "received": the batch runs again
        result = job.execute_in_process(partition_key=key, instance=world.instance)
        assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    _assert_paid_once(world, log, running)


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_bosun_saga_recover_finishes_what_a_dead_run_started(world, capsys):
    from orchestration.cli import main

    log, running, _ = _crash_one_batch(world)
    assert main(["saga", "recover"]) == 0
    _assert_paid_once(world, log, running)
    done = {
        e.key
        for e in world.resources["bosun_db"].inbox().events_between(1, 10_000, ["invoice.received"], statuses=("done",))
    }
    assert {r["saga_id"] for r in running} <= done


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_bosun_saga_rollback_undoes_chosen_steps(world, capsys):
    from orchestration.cli import main

    world.ingest_sample()
    world.run_pending()
    erp = world.resources["erp"]
    paid = erp.live_payments()[0]
    saga_id = paid["idempotency_key"].split(":", 1)[1]
    assert main(["saga", "rollback", saga_id, "--steps", "schedule_payment"]) == 0
    assert erp.live_payment_keys([paid["idempotency_key"]]) == set()
    assert erp.live_ledger_keys([f"post_ledger_entry:{saga_id}"]) == {f"post_ledger_entry:{saga_id}"}


def test_a_write_that_lands_after_the_saga_gave_up_stays_undone(erp_url):
    """Every attempt times out but the writes still land later: the saga is compensated,
    including the timed-out step, whose key the cancel consumed at the target."""
    import time

    from assets.invoices.payment_saga import payment_executor, payment_plan
    from orchestration.action.actions import RetryPolicy
    from resources.fault_injection import FaultPlan, FaultyTarget
    from resources.outbox import NotificationOutbox

    items = worker.saga_items(3)
    plan = FaultPlan(late={("schedule_payments", f"schedule_payment:{it['key']}"): 99 for it in items}, hang_s=0.4)
    target = FaultyTarget(ERPResource(url=erp_url), plan, worker.ERP_METHODS)
    steps = payment_plan(
        target,
        NotificationOutbox(url=erp_url),
        timeout_s=0.1,
        retry=RetryPolicy(attempts=2, initial_s=0.001, max_s=0.002),
    )
    out = payment_executor(target, erp_url, "late", rate=0, limit=None, plan=steps).run(items, "late")
    assert sorted(out.failed) == [it["key"] for it in items]
    deadline = time.monotonic() + 10
    while target.finished < len(target.calls) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded wait for the abandoned requests' threads, not a guess
    late_calls = sum(1 for name, _, _ in target.calls if name == "schedule_payments")
    assert late_calls == 2 and target.finished == len(target.calls)  # every late write has landed
    erp = ERPResource(url=erp_url)
    keys = [f"schedule_payment:{it['key']}" for it in items]
    assert erp.live_payment_keys(keys) == set()
    assert erp.live_ledger_keys([f"post_ledger_entry:{it['key']}" for it in items]) == set()
    assert SagaLog(erp_url).counts("invoices") == {"compensated": 3}


def test_the_erp_rate_limit_is_declared_by_the_actions_from_the_environment(erp_url, monkeypatch):
    from assets.invoices.payment_saga import payment_executor

    monkeypatch.setenv("BOSUN_ERP_RATE_LIMIT", "40")
    monkeypatch.setenv("BOSUN_OUTBOX_RATE_LIMIT", "5")
    ex = payment_executor(ERPResource(url=erp_url), erp_url, "env")
    assert {n: (s.action.target, s.action.rate_limit) for n, s in ex.plan.steps.items()} == {
        "post_ledger_entry": ("erp", 40.0),
        "schedule_payment": ("erp", 40.0),
        "notify_vendor": ("outbox", 5.0),
    }
    assert ex.limiters["erp"].interval == pytest.approx(1 / (40 * 0.95))
    assert ex.limiters["outbox"].interval == pytest.approx(1 / (5 * 0.95))
    monkeypatch.delenv("BOSUN_ERP_RATE_LIMIT")
    monkeypatch.delenv("BOSUN_OUTBOX_RATE_LIMIT")
    assert payment_executor(ERPResource(url=erp_url), erp_url, "none").limiters == {}
