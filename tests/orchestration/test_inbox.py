from datetime import datetime, timedelta, timezone

import pytest
from bosun_testing import invoice_event

from assets.invoices.workflow import EVENT_TYPES, registry
from orchestration.core import settings
from orchestration.trigger.batching import BatchPolicy, BatchRange, cut_batches
from orchestration.trigger.inbox import Inbox


def test_each_event_is_stored_once_and_duplicates_are_counted(bosun_home):
    inbox = Inbox(settings.database_url())
    first = inbox.ingest([invoice_event(i) for i in range(5)] + [invoice_event(0)], registry)
    assert (first.accepted, first.duplicates) == (5, 1)
    second = inbox.ingest([invoice_event(i) for i in range(5)], registry)
    assert (second.accepted, second.duplicates) == (0, 5)
    counts = inbox.counts()
    assert counts["received"] == 5 and counts["duplicates"] == 6
    assert counts["by_status"] == {"received": 5}


def test_rejected_input_is_kept_with_its_reason(bosun_home):
    inbox = Inbox(settings.database_url())
    bad = invoice_event(1)
    bad["payload"]["currency"] = "euro"
    summary = inbox.ingest([bad, "not json", invoice_event(2)], registry)
    assert summary.accepted == 1
    assert [r["line"] for r in summary.rejected] == [1, 2]
    assert "payload.currency" in summary.rejected[0]["reason"]
    kept = inbox.rejected()
    assert len(kept) == 2 and all(r["status"] == "rejected" and r["reason"] for r in kept)
    # Sending the same bad input again does not store it twice.
    inbox.ingest([bad], registry)
    assert len(inbox.rejected()) == 2


def test_pending_skips_rejected_and_respects_cursor(bosun_home):
    inbox = Inbox(settings.database_url())
    inbox.ingest([invoice_event(0), "junk", invoice_event(1), invoice_event(2)], registry)
    pending = inbox.pending_after(0, EVENT_TYPES, 100)
    assert len(pending) == 3
    assert inbox.pending_after(pending[1][0], EVENT_TYPES, 100) == pending[2:]


def test_batches_are_cut_when_full_or_old_enough():
    now = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    fresh = [(i, now) for i in range(1, 8)]
    policy = BatchPolicy(max_events=3, max_wait_seconds=10, max_batches_per_tick=10)
    assert [b.key for b in cut_batches(fresh, policy, now)] == [BatchRange(1, 3).key, BatchRange(4, 6).key]
    old = [(i, now - timedelta(seconds=11)) for i in range(1, 8)]
    assert cut_batches(old, policy, now)[-1] == BatchRange(7, 7)
    assert len(cut_batches(old, BatchPolicy(3, 10, max_batches_per_tick=2), now)) == 2


def test_batch_key_round_trips_and_rejects_garbage():

    assert BatchRange.parse(BatchRange(5, 900).key) == BatchRange(5, 900)
    with pytest.raises(ValueError):
        BatchRange.parse("9-3")
    with pytest.raises(ValueError):
        BatchRange.parse("batch-one")


def test_batch_size_grows_with_the_backlog_between_min_and_max():
    from orchestration.trigger.batching import adaptive_size

    policy = BatchPolicy(max_events=1000, min_events=100, max_in_flight=4)
    assert [adaptive_size(n, policy) for n in (0, 10, 400, 401, 2000, 4000, 50_000)] == [
        100,
        100,
        100,
        101,
        500,
        1000,
        1000,
    ]


def test_a_batch_s_statuses_are_those_of_its_records(bosun_home):
    inbox = Inbox(settings.database_url())
    inbox.ingest([invoice_event(i) for i in range(4)], registry)
    claimed = inbox.claim_batch("000000000001-000000000003", EVENT_TYPES)
    inbox.set_states([{"key": claimed[0].key, "status": "done"}], "000000000001-000000000003")
    records = inbox.batch_records("000000000001-000000000003", EVENT_TYPES)
    statuses = inbox.batch_statuses("000000000001-000000000003", EVENT_TYPES)
    assert statuses == {r["idempotency_key"]: r["status"] for r in records} and len(statuses) == 3
    assert sorted(statuses.values()) == ["done", "received", "received"]


def test_the_backlog_is_spread_over_the_free_slots_only():
    """With runs in flight, the rest of a backlog goes as one batch into the free slot, not as
    a tail of ever smaller batches each paying for a run process of its own."""
    from orchestration.trigger.batching import adaptive_size

    policy = BatchPolicy(max_events=1000, min_events=100, max_in_flight=4)
    assert [adaptive_size(n, policy, slots=1) for n in (50, 400, 900, 5000)] == [100, 400, 900, 1000]
    assert [adaptive_size(2000, policy, slots=s) for s in (0, 1, 2, 4, 9)] == [1000, 1000, 1000, 500, 500]


def test_a_state_change_can_be_limited_to_events_still_in_a_state(bosun_home):
    """A batch writing its outcomes must not undo what a reviewer answered meanwhile."""
    inbox = Inbox(settings.database_url())
    inbox.ingest([invoice_event(i) for i in range(2)], registry)
    keys = [f"s:e{i}" for i in range(2)]
    inbox.set_states([{"key": keys[0], "status": "done", "reason": "approved by alice"}])
    inbox.set_states(
        [{"key": k, "status": "escalated", "reason": "low confidence"} for k in keys], "b1", only_from=("received",)
    )
    rows = inbox.lookup(keys)
    assert [(rows[k]["status"], rows[k]["reason"]) for k in keys] == [
        ("done", "approved by alice"),
        ("escalated", "low confidence"),
    ]


def test_a_state_change_without_a_batch_keeps_the_events_batch(bosun_home):
    """A recovery or an approval outside a batch run settles an event; its batch stays."""
    inbox = Inbox(settings.database_url())
    inbox.ingest([invoice_event(1)], registry)
    inbox.set_states([{"key": "s:e1", "status": "escalated", "reason": "awaiting approval"}], "b7")
    inbox.set_states([{"key": "s:e1", "status": "done", "reason": "paid (recovered)"}])
    row = inbox.lookup(["s:e1"])["s:e1"]
    assert (row["status"], row["batch_id"]) == ("done", "b7")


def test_a_deployment_resizes_a_workflow_s_batch_policy_from_the_environment():
    from orchestration.trigger.batching import env_batch_policy

    declared = BatchPolicy(max_events=5000, max_wait_seconds=2.0, max_in_flight=2)
    assert env_batch_policy("invoices", declared, {}) is declared
    resized = env_batch_policy(
        "invoices", declared, {"BOSUN_INVOICES_BATCH_POLICY": '{"max_events": 2500, "max_in_flight": 3}'}
    )
    assert resized == BatchPolicy(max_events=2500, max_wait_seconds=2.0, max_in_flight=3)
    # Another workflow's variable is not this one's.
    assert env_batch_policy("tickets", declared, {"BOSUN_INVOICES_BATCH_POLICY": '{"max_events": 1}'}) is declared


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("max_events=2500", "Expecting value"),  # not JSON
        ("[2500]", "expected a JSON object"),
        ('{"max_event": 2500}', "unknown field(s) max_event"),
        ('{"max_events": 0}', "at least 1: max_events=0"),
        ('{"max_wait_seconds": -1}', "not negative: max_wait_seconds=-1"),
        ('{"max_events": "many"}', "max_events"),
    ],
)
def test_a_malformed_batch_policy_override_stops_the_load_with_its_reason(raw, reason):
    from orchestration.trigger.batching import env_batch_policy

    with pytest.raises(ValueError) as info:
        env_batch_policy("invoices", BatchPolicy(), {"BOSUN_INVOICES_BATCH_POLICY": raw})
    assert "BOSUN_INVOICES_BATCH_POLICY" in str(info.value) and reason in str(info.value)
