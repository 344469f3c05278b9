"""The ticket saga against its real targets (helpdesk tables, notification outbox): the reply
step runs only when the decision says so, a failed reply undoes the assignment and restores the
priority, and a ticket assigned by an earlier event is not assigned again."""

import pytest
import sqlalchemy as sa

from assets.tickets import executor
from assets.tickets.demo import seed_systems
from assets.tickets.systems import EFFECTS, TicketSystems, tickets
from resources.database import BosunDatabase
from resources.outbox import NotificationOutbox

CUSTOMER = {
    "customer_id": "C1",
    "name": "Anna Schmidt",
    "email": "anna@example.com",
    "tier": "gold",
    "vip": False,
    "contract": "annual",
    "open_invoices": 0,
}


def _params(key: str, ticket: str, reply: bool) -> dict:
    text = "Hello Anna Schmidt,\n\nThis should help: Refunds [kb-07-refunds]" if reply else None
    return {
        "key": key,
        "ticket_id": ticket,
        "customer_id": "C1",
        "team": "billing",
        "priority": "high",
        "previous_priority": "low",
        "send_reply": reply,
        "reply": text,
        "articles": ["kb-07-refunds"],
    }


@pytest.fixture
def desk(bosun_home):
    systems = TicketSystems()
    payloads = [
        {"ticket_id": t, "customer_id": "C1", "subject": "s", "created_at": "2026-01-01"} for t in "T1 T2 T3".split()
    ]
    seed_systems(systems, [CUSTOMER], [{"payload": p} for p in payloads])
    systems.set_field("priority", {"T1": "low", "T2": "low", "T3": "low"})
    return systems


def _resources(desk, outbox):
    return {"tickets": desk, "outbox": outbox, "bosun_db": BosunDatabase()}


def _row(desk, ticket):
    with desk.engine.connect() as c:
        return c.execute(sa.select(tickets).where(tickets.c.ticket_id == ticket)).one()


def test_the_reply_step_runs_only_when_decided_and_each_ticket_is_assigned_once(desk):
    outbox = NotificationOutbox()
    out = executor(_resources(desk, outbox), "test").run([_params("e1", "T1", False), _params("e2", "T2", True)])
    assert sorted(out.done) == ["e1", "e2"]
    assert {(r["key"], r["step"]) for r in out.log if r["status"] == "skipped"} == {("e1", "send_reply")}
    assert (_row(desk, "T1").team, _row(desk, "T1").priority) == ("billing", "high")
    assert outbox.live_notification_keys(["send_reply:e1", "send_reply:e2"]) == {"send_reply:e2"}
    assert "[kb-07-refunds]" in outbox.live_bodies("tickets")["send_reply:e2"]["reply"]
    # An update of T1 (another event) is refused: the ticket keeps one live assignment.
    again = executor(_resources(desk, outbox), "test").run([_params("e3", "T1", False)])
    assert again.refused["e3"]["code"] == "already_assigned"
    assert EFFECTS.acted_twice(desk.resolved_url, "assign") == []


class RefusingOutbox(NotificationOutbox):
    """The outbox refusing every message for a business reason (per item, permanent)."""

    def queue_notifications(self, items: list[dict]) -> dict[str, str]:
        return {it["key"]: "recipient opted out of automatic replies" for it in items}


def test_a_refused_reply_undoes_the_assignment_and_restores_the_priority(desk):
    out = executor(_resources(desk, RefusingOutbox()), "test").run([_params("e4", "T3", True)])
    assert out.failed["e4"]["failed_step"] == "send_reply"
    assert out.failed["e4"]["compensated"] == ["set_priority", "assign"]
    assert (_row(desk, "T3").team, _row(desk, "T3").priority) == (None, "low")
    effects = EFFECTS.effects(desk.resolved_url, ["assign:e4", "set_priority:e4"], [])
    assert len(effects) == 2 and not any(e.live for e in effects)


def test_an_outbox_that_cannot_answer_leaves_the_saga_in_doubt_for_recovery(desk, tmp_path):
    # The outbox's database cannot be opened: the reply's fate is unknown, so nothing is undone yet.
    broken = NotificationOutbox(url=f"sqlite:///{tmp_path / 'missing' / 'outbox.db'}")
    out = executor(_resources(desk, broken), "test").run([_params("e5", "T3", True)])
    assert out.unfinished == ["e5"] and not out.failed
    recovered = executor(_resources(desk, NotificationOutbox()), "test").recover()
    assert recovered.done == ["e5"]
