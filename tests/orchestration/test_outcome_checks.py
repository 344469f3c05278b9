"""The engine's standard outcome checks on a toy workflow (support tickets, no invoices): one
step with the standard checks and the workflow's own, the acted-twice query blocking, the
dead-letter limit not, a preview judging nothing of the batch and auditing nothing."""

import dagster as dg
import pytest
from pydantic import BaseModel

from orchestration.trigger.batching import BatchRange
from orchestration.trigger.dead_letters import DeadLetterPolicy
from orchestration.trigger.envelope import PayloadRegistry
from orchestration.verification.outcome_checks import (
    ActedOnTwice,
    OutcomeCheck,
    Reconcile,
    Verdict,
    build_outcome_checks,
)
from orchestration.verification.outcome_reconciliation import EventRecord, reconcile
from resources.database import BosunDatabase

TYPES = ["ticket.opened"]
BATCH = "00000001-00000004"
PREVIEW = "toy/preview"
toy_batches = dg.DynamicPartitionsDefinition(name="toy_batches")


class Ticket(BaseModel):
    subject: str


class Desk(dg.ConfigurableResource):
    """The toy's target: the tickets it closed, one entry per close."""

    closed: list[str] = []


@dg.asset(partitions_def=toy_batches)
def toy_actions() -> None:
    """Acts on nothing itself: the test sets the events' states before the run."""


def _reconcile(batch: BatchRange, r) -> object:
    rows = r["bosun_db"].inbox().batch_records(batch.key, TYPES)
    events = [EventRecord(row["idempotency_key"], row["status"], row["idempotency_key"], False) for row in rows]
    return reconcile(events, {}, ("close",), lambda k, s: f"{s}:{k}", lambda k: None, [])


checks = build_outcome_checks(
    "toy_outcome_checks",
    asset=toy_actions,
    partitions_def=toy_batches,
    event_types=TYPES,
    dead_letter_policy=DeadLetterPolicy(max_open=0, max_oldest_age_s=3600),
    reconcile=Reconcile("tickets_reconcile", "Outcomes agree with the desk.", _reconcile),
    acted_on_twice=ActedOnTwice(
        "no_ticket_closed_twice",
        "No ticket closed twice.",
        lambda r: sorted({t for t in r["desk"].closed if r["desk"].closed.count(t) > 1}),
        count_name="tickets_closed_twice",
        resource_keys={"desk"},
    ),
    extra_checks=[
        OutcomeCheck(
            "every_ticket_done",
            "Toy: no ticket of the batch still received (batch-scoped).",
            lambda batch, r: Verdict(
                "received" not in r["bosun_db"].inbox().batch_states(batch.key, TYPES), {"batch": batch.key}
            ),
            batch_scoped=True,
        )
    ],
    preview_tag=PREVIEW,
)


@pytest.fixture
def db(bosun_home):
    db = BosunDatabase(url=f"sqlite:///{bosun_home / 'bosun.db'}")
    registry = PayloadRegistry()
    registry.register("ticket.opened", 1, Ticket)
    raws = [
        {
            "source": "desk",
            "id": f"t-{i}",
            "type": "ticket.opened",
            "schema_version": 1,
            "occurred_at": "2026-11-02T08:00:00+00:00",
            "entity_key": f"c-{i}",
            "payload": {"subject": f"printer {i}"},
        }
        for i in range(4)
    ]
    db.inbox().ingest(raws, registry)
    assert len(db.inbox().claim_batch(BATCH, TYPES)) == 4
    return db


def _run(db, closed, tags=None):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(toy_batches.name, [BATCH])
        result = dg.materialize(
            [toy_actions, checks],
            partition_key=BATCH,
            instance=instance,
            resources={"bosun_db": db, "desk": Desk(closed=closed)},
            tags=tags,
            raise_on_error=False,
        )
        return result, {e.check_name: e for e in result.get_asset_check_evaluations()}


def _settle(db):
    db.inbox().set_states(
        [
            {"key": "desk:t-0", "status": "done"},
            {"key": "desk:t-1", "status": "done"},
            {"key": "desk:t-2", "status": "escalated", "reason": "unsure"},
            {"key": "desk:t-3", "status": "dead_lettered", "reason": "desk down", "attempts": 3},
        ],
        BATCH,
    )


def test_one_step_runs_the_standard_checks_and_the_workflows_own_and_audits_them(db):
    _settle(db)
    result, by_name = _run(db, closed=["desk:t-0", "desk:t-1"])
    # The dead-letter limit (0 open) is breached, but it is not blocking: the run succeeds.
    assert result.success
    assert [name for name in by_name] == [
        "every_event_reached_a_terminal_state",
        "tickets_reconcile",
        "no_ticket_closed_twice",
        "every_ticket_done",
        "dead_letters_within_limits",
    ]
    terminal = by_name["every_event_reached_a_terminal_state"]
    assert terminal.passed and terminal.metadata["events"].value == 4
    assert terminal.metadata["state_dead_lettered"].value == 1 and terminal.metadata["not_terminal"].value == 0
    assert by_name["tickets_reconcile"].passed and by_name["tickets_reconcile"].metadata["events"].value == 4
    assert by_name["no_ticket_closed_twice"].metadata["tickets_closed_twice"].value == 0
    assert by_name["every_ticket_done"].passed
    dead = by_name["dead_letters_within_limits"]
    assert not dead.passed and dead.metadata["open_dead_letters"].value == 1
    assert [d["event_key"] for d in dead.metadata["first_open_dead_letters"].value] == ["desk:t-3"]
    [audited] = db.audit().batch_records(BATCH, ("check",))
    assert audited["record"]["checks"]["dead_letters_within_limits"]["passed"] is False
    assert set(audited["record"]["checks"]) == set(by_name)


def test_an_entity_acted_on_twice_fails_the_blocking_check_and_the_run(db):
    _settle(db)
    result, by_name = _run(db, closed=["desk:t-0", "desk:t-1", "desk:t-0"])
    assert not result.success
    twice = by_name["no_ticket_closed_twice"]
    assert not twice.passed and twice.metadata["tickets_closed_twice"].value == 1
    assert twice.metadata["examples"].value == ["desk:t-0"]


def test_a_preview_judges_nothing_of_the_batch_and_audits_nothing(db):
    # The events stay received, as after a preview; a real run would fail both batch checks.
    result, by_name = _run(db, closed=[], tags={PREVIEW: "true"})
    assert result.success
    for name in ("every_event_reached_a_terminal_state", "tickets_reconcile", "every_ticket_done"):
        assert by_name[name].passed and by_name[name].metadata["preview"].value is True
    assert by_name["no_ticket_closed_twice"].passed and "preview" not in by_name["no_ticket_closed_twice"].metadata
    assert db.audit().batch_records(BATCH, ("check",)) == []
    _, real = _run(db, closed=[])
    assert not real["every_event_reached_a_terminal_state"].passed and not real["every_ticket_done"].passed
