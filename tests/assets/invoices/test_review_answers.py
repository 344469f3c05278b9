"""Reviewers' answers on the invoice workflow: an approved escalation pays once through the
payment saga, a rejection acts on nothing, a correction is feedback only; through the
service, and through `bosun serve`, on SQLite and Postgres."""

import os
import threading

import httpx
import pytest
import sqlalchemy as sa
from bosun_testing import BosunServer

from assets.invoices.erp import ERPResource, payments
from orchestration.action.saga_log import SagaLog
from orchestration.review.answers import ReviewError, ReviewService


def _service(world, holder="test"):
    from orchestration.definitions import review_workflows

    return ReviewService(world.resources["bosun_db"].resolved_url, world.resources, review_workflows, holder)


def _escalations(world, proposed):
    return [
        it
        for it in world.resources["bosun_db"].review_queue().pending(1000)
        if not it["proposal"].get("kind") and it["proposal"]["decision"] == proposed
    ]


def _payments_with_key(world, key) -> int:
    with world.resources["erp"].engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(payments).where(payments.c.idempotency_key == key)
        ).scalar_one()


def _event(world, key) -> dict:
    return world.resources["bosun_db"].inbox().lookup([key])[key]


def test_an_approved_escalated_payment_is_paid_once_with_the_reviewer_recorded(world):
    world.ingest_sample()
    assert not world.run_pending().failed
    db = world.resources["bosun_db"]
    before = db.inbox().counts()["by_status"]
    item, racing = _escalations(world, "approve")[:2]
    key, pay_key = item["idempotency_key"], f"schedule_payment:{item['idempotency_key']}"
    assert _event(world, key)["status"] == "escalated" and _payments_with_key(world, pay_key) == 0

    answer = _service(world).approve(item["id"], "alice", note="PO confirmed by phone")
    assert answer["sagas"]["done"] == [key]
    assert _payments_with_key(world, pay_key) == 1
    saga = SagaLog(db.resolved_url).load([key])[key]
    assert saga["status"] == "done" and saga["approved_by"] == "alice"
    event = _event(world, key)
    assert event["status"] == "done" and "approved by alice" in event["reason"]
    assert event["batch_id"] == item["batch_id"]
    fb = [f for f in db.feedback().list("invoices") if f["subject"] == key]
    assert [(f["kind"], f["label"], f["decided"], f["reviewer"], f["review_id"]) for f in fb] == [
        ("approve", "approve", "approve", "alice", item["id"])
    ]
    chain = db.audit().records_for(key)
    reviews = [r["record"] for r in chain if r["kind"] == "review"]
    assert [(r["by"], r["answer"], r["via"]) for r in reviews] == [("alice", "approved", "cli")]
    assert {r["record"]["step"] for r in chain if r["kind"] == "action" and r["record"].get("review_id")} == {
        "post_ledger_entry",
        "schedule_payment",
        "notify_vendor",
    }
    after = db.inbox().counts()["by_status"]
    assert after["escalated"] == before["escalated"] - 1 and after["done"] == before["done"] + 1

    # Twice: refused, nothing acts again.
    with pytest.raises(ReviewError) as refused:
        _service(world).approve(item["id"], "bob")
    assert refused.value.code == "conflict" and "already approved by alice" in refused.value.message
    assert _payments_with_key(world, pay_key) == 1
    assert len([f for f in db.feedback().list("invoices") if f["subject"] == key]) == 1

    # Two reviewers at once (two services, two connections): one answer, one payment.
    gate, results = threading.Barrier(2), []

    def approve(who):
        svc = _service(world, holder=f"test-{who}")
        gate.wait(10)
        try:
            results.append(("ok", svc.approve(racing["id"], who)["by"]))
        except ReviewError as err:
            results.append((err.code, who))

    threads = [threading.Thread(target=approve, args=(who,)) for who in ("carol", "dave")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(code for code, _ in results) == ["conflict", "ok"], results
    winner = next(who for code, who in results if code == "ok")
    racing_key = racing["idempotency_key"]
    assert _payments_with_key(world, f"schedule_payment:{racing_key}") == 1
    assert SagaLog(db.resolved_url).load([racing_key])[racing_key]["approved_by"] == winner
    assert [f["reviewer"] for f in db.feedback().list("invoices") if f["subject"] == racing_key] == [winner]
    assert db.audit().verify().ok


def test_a_rejection_acts_on_nothing_and_a_correction_is_feedback_only(world, monkeypatch):
    from orchestration.definitions import review_workflows

    monkeypatch.setenv("BOSUN_INVOICE_APPROVAL_LIMIT", "2000")
    world.ingest_sample()
    assert not world.run_pending().failed
    db, svc = world.resources["bosun_db"], _service(world)
    log = SagaLog(db.resolved_url)

    # A plan waiting for approval, rejected: the saga never runs, not even by recovery.
    gated = next(it for it in db.review_queue().pending(1000) if it["proposal"].get("kind") == "saga_approval")
    saga_id = gated["proposal"]["saga_id"]
    assert svc.reject(gated["id"], "bob", "vendor under investigation")["label"] == "reject"
    saga = log.load([saga_id])[saga_id]
    assert saga["status"] == "failed" and saga["reason"] == "rejected by bob: vendor under investigation"
    review_workflows["invoices"].saga_executor(world.resources, "test").recover()
    assert _payments_with_key(world, f"schedule_payment:{saga_id}") == 0
    event = _event(world, saga_id)
    assert event["status"] == "done" and event["outcome"]["decision"] == "reject"
    with pytest.raises(ReviewError) as twice:
        svc.approve(gated["id"], "alice")
    assert twice.value.code == "conflict"
    assert _payments_with_key(world, f"schedule_payment:{saga_id}") == 0

    # An escalated proposal to pay, rejected: no saga at all.
    item = _escalations(world, "approve")[0]
    key = item["idempotency_key"]
    svc.reject(item["id"], "bob", "duplicate of a paper invoice")
    assert log.load([key]) == {} and _payments_with_key(world, f"schedule_payment:{key}") == 0
    assert _event(world, key)["status"] == "done"
    # Refusing a proposal not to pay must say what instead.
    held = _escalations(world, "reject")[0]
    with pytest.raises(ReviewError) as unsaid:
        svc.reject(held["id"], "bob", "looks fine")
    assert unsaid.value.code == "invalid" and "label" in unsaid.value.message
    svc.reject(held["id"], "bob", "looks fine", label="hold")
    fb = {(f["subject"], f["kind"], f["label"], f["decided"]) for f in db.feedback().list("invoices")}
    assert {
        (saga_id, "reject", "reject", "approve"),
        (key, "reject", "reject", "approve"),
        (held["idempotency_key"], "reject", "hold", "reject"),
    } <= fb

    # A past decision that never reached the queue: paid, and it should not have been.
    paid = next(
        e
        for e in db.inbox().events_between(1, 10_000, ["invoice.received"], statuses=("done",))
        if (_event(world, e.key)["outcome"] or {}).get("payment_key")
    )
    state = _event(world, paid.key)
    out = svc.correct(paid.envelope.id, "reject", "carol", note="vendor sent a credit note")
    assert (out["event"], out["decided"], out["label"]) == (paid.key, "approve", "reject")
    assert _event(world, paid.key)["status"] == state["status"] == "done"
    assert db.feedback().labels("invoices")[paid.key] == "reject"
    assert [r["record"]["answer"] for r in db.audit().records_for(paid.key) if r["kind"] == "review"] == ["corrected"]
    for target, label, code in [
        (paid.key, "maybe", "invalid"),
        ("portal:nope", "reject", "not_found"),
        (999_999, "reject", "not_found"),
    ]:
        with pytest.raises(ReviewError) as bad:
            svc.correct(target, label, "carol")
        assert bad.value.code == code
    assert db.audit().verify().ok


# The HTTP layer is thin over the service tested above on both databases: one is enough here.
@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_http_answers_record_the_key_name_and_pay_once(world, tmp_path):
    from orchestration.api.keys import ApiKeys

    world.ingest_sample()
    assert not world.run_pending().failed
    db = world.resources["bosun_db"]
    keys = ApiKeys(db.resolved_url)
    lead, lead_key = keys.create("ap-lead", ["reviews:write"])
    reader, _ = keys.create("auditor", ["reviews:read"])
    feeder, _ = keys.create("feeder", ["events:write", "events:read"])
    item = _escalations(world, "approve")[0]
    key = item["idempotency_key"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    srv = BosunServer(env, tmp_path / "serve.log")
    try:
        srv.wait_ready()
        url = f"{srv.url}/v1/reviews"

        def call(method, path, who, **kw):
            return httpx.request(method, url + path, headers={"Authorization": f"Bearer {who}"}, timeout=60, **kw)

        listed = call("GET", "", reader).json()["items"]
        assert item["id"] in {it["id"] for it in listed} and all(it["status"] == "pending" for it in listed)
        shown = call("GET", f"/{item['id']}", reader).json()
        record = shown["decision_record"]
        assert shown["event"] == key and record["context_hash"] and record["confidence_breakdown"]
        assert {"model", "prompt_version", "context_used", "guardrails", "proposed"} <= set(record)
        assert call("GET", "", feeder).status_code == 403
        assert call("POST", f"/{item['id']}/approve", reader).status_code == 403
        assert httpx.post(f"{url}/{item['id']}/approve").status_code == 401
        first = call("POST", f"/{item['id']}/approve", lead, json={"note": "ok"})
        assert first.status_code == 200, first.text
        assert first.json()["by"] == "ap-lead" and first.json()["sagas"]["done"] == [key]
        again = call("POST", f"/{item['id']}/approve", lead)
        assert again.status_code == 409 and "already approved by ap-lead" in again.json()["detail"]
        source, event_id = key.split(":", 1)
        fixed = httpx.post(
            f"{srv.url}/v1/events/{source}/{event_id}/corrections",
            json={"label": "hold"},
            headers={"Authorization": f"Bearer {lead}"},
            timeout=30,
        )
        assert fixed.status_code == 201 and fixed.json()["decided"] == "approve"
        decided = call("GET", "?status=approved", reader).json()["items"]
        assert [(it["id"], it["answer"]["by"]) for it in decided] == [(item["id"], "ap-lead")]
    finally:
        srv.stop()
    assert _payments_with_key(world, f"schedule_payment:{key}") == 1
    assert SagaLog(db.resolved_url).load([key])[key]["approved_by"] == "ap-lead"
    assert [(f["kind"], f["reviewer"]) for f in db.feedback().list("invoices") if f["subject"] == key] == [
        ("approve", "ap-lead"),
        ("correct", "ap-lead"),
    ]
    reviews = [r["record"] for r in db.audit().records_for(key) if r["kind"] == "review"]
    assert {r["via"] for r in reviews} == {f"api:{lead_key.key_id}"}
    assert not any(lead.split("_", 2)[2] in str(r) for r in reviews)  # the secret is never recorded


class ProcessDied(BaseException):
    """Stands for the process dying: nothing in the executor or the service may catch it."""


class DiesAfterSchedulingPayments(ERPResource):
    def schedule_payments(self, items):
        super().schedule_payments(items)
        raise ProcessDied("killed between the payment and its log record")


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_an_approval_whose_process_dies_mid_payment_is_finished_once_by_recovery(world):
    from orchestration.cli import main
    from orchestration.definitions import build_definitions, review_workflows

    world.ingest_sample()
    assert not world.run_pending().failed
    db = world.resources["bosun_db"]
    item = _escalations(world, "approve")[0]
    key, pay_key = item["idempotency_key"], f"schedule_payment:{item['idempotency_key']}"
    dying = build_definitions({"erp": DiesAfterSchedulingPayments()}).resources
    with pytest.raises(ProcessDied):
        ReviewService(db.resolved_url, dying, review_workflows, "doomed").approve(item["id"], "alice")
    # The answer was committed before anything acted: it is recorded, and it is final.
    assert db.review_queue().get(item["id"])["status"] == "approved"
    assert [f["reviewer"] for f in db.feedback().list("invoices") if f["subject"] == key] == ["alice"]
    assert SagaLog(db.resolved_url).load([key])[key]["status"] == "running"
    assert _payments_with_key(world, pay_key) == 1
    with pytest.raises(ReviewError):
        _service(world).approve(item["id"], "bob")

    assert main(["saga", "recover"]) == 0
    saga = SagaLog(db.resolved_url).load([key])[key]
    assert saga["status"] == "done" and saga["approved_by"] == "alice"
    assert _payments_with_key(world, pay_key) == 1
    assert _event(world, key)["status"] == "done"
