"""The notification outbox against real SQL: idempotent writes, compensation that never
unsends (cancel if queued, retract with a correction if dispatched), verify, and where it
lives by default."""

import pytest
import sqlalchemy as sa

from resources.outbox import NotificationOutbox, correction_key, notifications


@pytest.fixture(params=["sqlite", "postgres"])
def outbox(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'outbox.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return NotificationOutbox(url=url)


def _notice(key: str, subject: str = "Payment scheduled for invoice INV-1") -> dict:
    return {"key": key, "recipient": "V-1", "entity": "INV-1", "subject": subject, "body": {"amount": "100.00"}}


def _rows(outbox: NotificationOutbox) -> list[tuple]:
    with outbox.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(notifications.c.idempotency_key, notifications.c.kind, notifications.c.status).order_by(
                    notifications.c.id
                )
            )
        ]


def test_the_same_key_twice_is_one_message_and_returns_the_first(outbox):
    first = outbox.queue(_notice("n:1"))
    again = outbox.queue(_notice("n:1", subject="something else"))
    assert again == first and again["subject"] == "Payment scheduled for invoice INV-1"
    assert outbox.queue_notifications([_notice("n:1"), _notice("n:2")]) == {}
    assert _rows(outbox) == [("n:1", "notice", "queued"), ("n:2", "notice", "queued")]
    assert outbox.live_notification_keys(["n:1", "n:2", "n:3"]) == {"n:1", "n:2"}


def test_a_queued_message_is_cancelled_and_never_leaves(outbox):
    outbox.queue_notifications([_notice("n:1"), _notice("n:2")])
    outbox.retract_notifications([_notice("n:1")])
    assert outbox.live_notification_keys(["n:1", "n:2"]) == {"n:2"}
    assert [m["idempotency_key"] for m in outbox.dispatch()] == ["n:2"]
    assert _rows(outbox) == [("n:1", "notice", "cancelled"), ("n:2", "notice", "dispatched")]


def test_a_dispatched_message_is_retracted_with_a_correction_kept_on_record(outbox):
    outbox.queue_notifications([_notice("n:1")])
    assert [m["status"] for m in outbox.dispatch()] == ["dispatched"]
    outbox.retract_notifications([_notice("n:1")])
    outbox.retract_notifications([_notice("n:1")])  # a replayed compensation adds nothing
    assert outbox.live_notification_keys(["n:1"]) == set()
    assert _rows(outbox) == [("n:1", "notice", "retracted"), (correction_key("n:1"), "correction", "queued")]
    correction = outbox.messages([correction_key("n:1")])[correction_key("n:1")]
    assert correction["recipient"] == "V-1" and correction["corrects"] == "n:1"
    assert correction["body"]["retracts"] == "n:1" and correction["subject"].startswith("Correction: ")
    assert [m["idempotency_key"] for m in outbox.dispatch()] == [correction_key("n:1")]
    assert outbox.dispatch() == []


def test_retracting_a_message_that_has_not_arrived_consumes_its_key(outbox):
    """A write that timed out may land after the saga gave up on it: it must not go out then."""
    outbox.retract_notifications([_notice("n:late")])
    outbox.queue_notifications([_notice("n:late")])
    assert outbox.live_notification_keys(["n:late"]) == set()
    assert outbox.dispatch() == []
    assert _rows(outbox) == [("n:late", "notice", "cancelled")]


def test_it_lives_beside_the_erp_unless_told_otherwise(bosun_home, monkeypatch, tmp_path):
    erp_db, own_db = tmp_path / "erp.db", tmp_path / "outbox.db"
    monkeypatch.setenv("BOSUN_ERP_DATABASE_URL", f"sqlite:///{erp_db}")
    assert NotificationOutbox().engine.url.database == str(erp_db)
    monkeypatch.setenv("BOSUN_OUTBOX_DATABASE_URL", f"sqlite:///{own_db}")
    assert NotificationOutbox().engine.url.database == str(own_db)
