"""The review service on its own, with a second workflow (support tickets) whose answers
execute nothing: the claim, the records an answer writes, refusals and races; on SQLite
and Postgres. The paying path is in tests/assets/invoices/test_review_answers.py."""

import threading
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from orchestration.audit.chain import AuditEntry, AuditLog
from orchestration.decision.feedback import FeedbackStore
from orchestration.review.answers import ReviewError, ReviewService
from orchestration.review.queue import ReviewQueue
from orchestration.trigger.envelope import PayloadRegistry
from orchestration.trigger.inbox import Inbox

LABELS = ("route", "close", "spam")


def _label(record):
    return record.get("decision") if record.get("decision") in LABELS else None


TICKETS = SimpleNamespace(
    WORKFLOW="tickets",
    EVENT_TYPES=("ticket.opened",),
    LABELS=LABELS,
    proposed_label=_label,
    decided_label=_label,
    rejected_label=lambda proposed: "route" if proposed == "close" else None,
    approved_sagas=lambda item: [],
)


class Ticket(BaseModel):
    subject: str


def _world(url, n=4):
    """n tickets decided: 0 and 1 escalated into the queue, the rest closed by Bosun."""
    registry = PayloadRegistry()
    registry.register("ticket.opened", 1, Ticket)
    events = [
        {
            "source": "desk",
            "id": f"t-{i}",
            "type": "ticket.opened",
            "schema_version": 1,
            "occurred_at": "2026-11-02T08:00:00+00:00",
            "entity_key": f"c-{i}",
            "payload": {"subject": f"printer {i}"},
        }
        for i in range(n)
    ]
    Inbox(url).ingest(events, registry)
    decisions = {f"desk:t-{i}": ("close" if i != 1 else "spam") for i in range(n)}
    AuditLog(url).append(
        [
            AuditEntry(
                "decision",
                k,
                {
                    "decision": d,
                    "confidence": 0.4 if i < 2 else 0.97,
                    "model": "local",
                    "prompt_version": "p1",
                    "context_hash": f"h{i}",
                    "guardrails": {"flagged_by": []},
                    "confidence_breakdown": [{"name": "model_probability"}],
                },
                "b1",
            )
            for i, (k, d) in enumerate(decisions.items())
        ]
    )
    Inbox(url).set_states(
        [
            {"key": k, "status": "escalated" if i < 2 else "done", "reason": "low confidence"}
            for i, k in enumerate(decisions)
        ],
        "b1",
    )
    ReviewQueue(url).submit(
        "tickets",
        [
            {
                "key": f"desk:t-{i}",
                "entity_key": f"c-{i}",
                "confidence": 0.4,
                "reason": "confidence 0.40 below 0.75",
                "proposal": {"decision": decisions[f"desk:t-{i}"]},
            }
            for i in range(2)
        ],
        "b1",
    )
    return ReviewService(url, {}, {"tickets": TICKETS}, "test")


def _ids(svc):
    return [it["id"] for it in svc.list()]


def test_an_answer_ends_the_escalation_and_writes_feedback_and_audit_once(db_url):
    svc = _world(db_url)
    first, second = _ids(svc)
    out = svc.approve(first, "alice", note="known customer")
    assert (out["answer"], out["label"], out["event"]) == ("approved", "close", "desk:t-0")
    row = Inbox(db_url).lookup(["desk:t-0"])["desk:t-0"]
    assert row["status"] == "done" and row["reason"] == "close approved by alice: known customer"
    assert row["outcome"] == {"decision": "close", "reviewed_by": "alice", "review_id": first}
    assert row["batch_id"] == "b1"
    [fb] = FeedbackStore(db_url).list("tickets")
    assert (fb["subject"], fb["kind"], fb["label"], fb["decided"], fb["reviewer"], fb["review_id"]) == (
        "desk:t-0",
        "approve",
        "close",
        "close",
        "alice",
        first,
    )
    [review] = [r["record"] for r in AuditLog(db_url).records_for("desk:t-0") if r["kind"] == "review"]
    assert (review["by"], review["answer"], review["label"]) == ("alice", "approved", "close")

    with pytest.raises(ReviewError) as twice:
        svc.reject(first, "bob", "changed my mind")
    assert twice.value.code == "conflict" and "already approved by alice" in twice.value.message
    assert len(FeedbackStore(db_url).list("tickets")) == 1
    assert Inbox(db_url).lookup(["desk:t-0"])["desk:t-0"]["status"] == "done"

    # Refusing Bosun's "spam" must name the right label; then nothing acts, the event is done.
    with pytest.raises(ReviewError, match="label"):
        svc.reject(second, "bob", "a real customer")
    svc.reject(second, "bob", "a real customer", label="route")
    assert FeedbackStore(db_url).labels("tickets") == {"desk:t-0": "close", "desk:t-1": "route"}
    assert Inbox(db_url).counts()["by_status"] == {"done": 4}
    assert AuditLog(db_url).verify().ok


def test_list_and_show(db_url):
    svc = _world(db_url)
    first, second = _ids(svc)
    svc.approve(first, "alice")
    assert [it["id"] for it in svc.list()] == [second]
    [done] = svc.list("approved")
    assert (done["id"], done["status"], done["answer"]["by"], done["answer"]["label"]) == (
        first,
        "approved",
        "alice",
        "close",
    )
    assert [it["id"] for it in svc.list("all", workflow="tickets")] == [first, second]
    assert svc.list("all", workflow="invoices") == []
    shown = svc.show(first)
    assert shown["decision_record"]["context_hash"] == "h0" and shown["decision_record"]["prompt_version"] == "p1"
    assert [r["kind"] for r in shown["audit"]] == ["decision", "review"]
    assert [f["kind"] for f in shown["feedback"]] == ["approve"]
    with pytest.raises(ReviewError) as bad:
        svc.list("maybe")
    assert bad.value.code == "invalid"


def test_racing_reviewers_decide_an_item_once(db_url):
    _world(db_url)
    first = _ids(ReviewService(db_url, {}, {"tickets": TICKETS}))[0]
    gate, results = threading.Barrier(6), []

    def answer(i):
        svc = ReviewService(db_url, {}, {"tickets": TICKETS}, f"r{i}")
        gate.wait(10)
        try:
            if i % 2:
                svc.approve(first, f"r{i}")
            else:
                svc.reject(first, f"r{i}", "no")
            results.append(("ok", i))
        except ReviewError as err:
            results.append((err.code, i))

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(c for c, _ in results) == ["conflict"] * 5 + ["ok"]
    winner = next(i for c, i in results if c == "ok")
    [fb] = FeedbackStore(db_url).list("tickets")
    assert fb["reviewer"] == f"r{winner}" and fb["kind"] == ("approve" if winner % 2 else "reject")
    assert len([r for r in AuditLog(db_url).records_for("desk:t-0") if r["kind"] == "review"]) == 1


def test_a_correction_of_a_past_decision_is_feedback_only(db_url):
    svc = _world(db_url)
    before = Inbox(db_url).lookup(["desk:t-3"])["desk:t-3"]
    out = svc.correct("t-3", "spam", "carol", note="bot traffic")
    assert (out["event"], out["decided"], out["label"], out["review_id"]) == ("desk:t-3", "close", "spam", None)
    after = Inbox(db_url).lookup(["desk:t-3"])["desk:t-3"]
    assert (after["status"], after["reason"], after["updated_at"]) == (
        before["status"],
        before["reason"],
        before["updated_at"],
    )
    # A pending item can be corrected too: it stays pending for someone to decide.
    first = _ids(svc)[0]
    svc.correct(first, "route", "carol")
    assert svc.list()[0]["id"] == first
    assert FeedbackStore(db_url).labels("tickets") == {"desk:t-3": "spam", "desk:t-0": "route"}
    for target, label, code in [
        ("t-3", "maybe", "invalid"),
        ("desk:nope", "spam", "not_found"),
        (4242, "spam", "not_found"),
    ]:
        with pytest.raises(ReviewError) as bad:
            svc.correct(target, label, "carol")
        assert bad.value.code == code


def test_items_the_service_does_not_answer_are_refused(db_url):
    svc = _world(db_url)
    ReviewQueue(db_url).submit(
        "tickets",
        [
            {
                "key": "rollback:desk:t-2",
                "entity_key": "desk:t-2",
                "reason": "rollback failed",
                "proposal": {"kind": "saga_rollback_failed", "saga_id": "desk:t-2"},
            }
        ],
    )
    rollback = svc.list()[-1]["id"]
    for call, code in [
        (lambda: svc.approve(rollback, "alice"), "invalid"),
        (lambda: svc.approve(999, "alice"), "not_found"),
        (lambda: svc.approve(_ids(svc)[0], ""), "invalid"),
        (lambda: svc.reject(_ids(svc)[0], "bob", "  "), "invalid"),
    ]:
        with pytest.raises(ReviewError) as refused:
            call()
        assert refused.value.code == code
    assert FeedbackStore(db_url).list() == [] and len(svc.list()) == 3
