import pytest

from orchestration.core import settings
from orchestration.decision.feedback import FeedbackStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, bosun_home):
    url = settings.database_url() if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return FeedbackStore(url)


def test_the_latest_answer_for_an_event_is_its_label(store):
    store.record("invoices", "k1", "approve", "approve", "alice", decided="approve")
    store.record("invoices", "k2", "reject", "reject", "alice", decided="approve", review_id=7)
    store.record("invoices", "k1", "correct", "reject", "bob", decided="approve", note="PO was closed")
    store.record("tickets", "t1", "correct", "close", "bob")
    assert store.labels("invoices") == {"k1": "reject", "k2": "reject"}
    rows = store.list("invoices")
    assert [(r["subject"], r["kind"], r["reviewer"]) for r in rows] == [
        ("k1", "approve", "alice"),
        ("k2", "reject", "alice"),
        ("k1", "correct", "bob"),
    ]
    assert rows[1]["review_id"] == 7 and rows[2]["note"] == "PO was closed"


def test_bulk_feedback_is_stored_like_single_answers(store):
    n = store.record_many(
        [
            {"workflow": "invoices", "subject": f"k{i}", "kind": "correct", "label": "reject", "reviewer": "import"}
            for i in range(50)
        ]
    )
    assert n == 50 and len(store.labels("invoices")) == 50


@pytest.mark.parametrize("kind, reviewer", [("maybe", "alice"), ("approve", "")])
def test_an_answer_without_a_known_kind_or_a_reviewer_is_refused(store, kind, reviewer):
    with pytest.raises(ValueError):
        store.record("invoices", "k1", kind, "approve", reviewer)
    with pytest.raises(ValueError):
        store.record_many(
            [{"workflow": "invoices", "subject": "k1", "kind": kind, "label": "approve", "reviewer": reviewer}]
        )
    assert store.list() == []
