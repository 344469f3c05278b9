"""Reviewed decisions: the latest label of each event joined with its latest archived
decision record, on SQLite and Postgres."""

import pytest

from orchestration.audit.chain import AuditEntry, AuditLog
from orchestration.core import settings
from orchestration.decision.feedback import FeedbackStore
from orchestration.review.reviewed import decision_records, feedback_after, reviewed_decisions


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, bosun_home):
    return settings.database_url() if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _decision(decision, etype="invoice.received", **extra):
    return {"event": {"type": etype}, "decision": decision, "facts": {"amount": 10.0}, **extra}


def test_each_review_meets_the_latest_decision_its_event_had(url):
    audit, fb = AuditLog(url), FeedbackStore(url)
    audit.append(
        [
            AuditEntry("decision", "k1", _decision("approve", model_version="v1"), "1-2"),
            AuditEntry("outcome", "k1", {"status": "done"}, "1-2"),
            AuditEntry("decision", "k2", _decision("hold"), "1-2"),
            AuditEntry("decision", "t1", _decision("close", etype="ticket.opened"), "1-2"),
        ]
    )
    # The batch re-run decides k1 again: that decision is the one reviewed.
    audit.append([AuditEntry("decision", "k1", _decision("approve", model_version="v2"), "1-2")])
    fb.record("invoices", "k1", "approve", "approve", "alice")
    fb.record("invoices", "k1", "correct", "reject", "bob")  # the later answer wins
    fb.record("invoices", "gone", "correct", "hold", "bob")  # never decided (or pruned)
    fb.record("tickets", "t1", "approve", "close", "carol")

    joined, missing = reviewed_decisions(url, "invoices", ["invoice.received"])
    assert missing == ["gone"]
    assert [(r["subject"], r["label"], r["kind"], r["decision"]["model_version"]) for r in joined] == [
        ("k1", "reject", "correct", "v2")
    ]
    assert set(decision_records(url, event_types=["invoice.received"])) == {"k1", "k2"}
    assert decision_records(url, subjects=["k2"])["k2"]["batch_id"] == "1-2"
    n, top = feedback_after(url, "invoices", 0)
    assert n == 3 and feedback_after(url, "invoices", top) == (0, top)


def test_many_subjects_are_read_in_chunks(url):
    audit = AuditLog(url)
    audit.append([AuditEntry("decision", f"k{i}", _decision("approve"), "b") for i in range(1200)])
    assert len(decision_records(url, subjects=[f"k{i}" for i in range(0, 1200, 1)])) == 1200
