"""Delivery triage on a real inbox: content duplicates, debounce, stale events."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from orchestration.core import settings
from orchestration.core.db import stale_events
from orchestration.trigger.delivery import DeliveryPolicy, triage
from orchestration.trigger.envelope import PayloadRegistry
from orchestration.trigger.inbox import Inbox

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)


class Update(BaseModel):
    state: str


registry = PayloadRegistry()
registry.register("thing.updated", 1, Update)


def ev(i, entity, state, at_s):
    return {
        "source": "s",
        "id": f"e{i}",
        "type": "thing.updated",
        "schema_version": 1,
        "occurred_at": (T0 + timedelta(seconds=at_s)).isoformat(),
        "entity_key": entity,
        "payload": {"state": state},
    }


def run(inbox, policy, events):
    keys = set(inbox.ingest(events, registry).keys)
    pending = [e for e in inbox.events_between(0, 10**9, ["thing.updated"]) if e.key in keys]
    return triage(inbox, pending, {"thing.updated": policy}, lock_name="t", batch_id="b")


def statuses(inbox):
    return {
        k: s
        for k, s in inbox.engine.connect().execute(sa.text("select idempotency_key, status from bosun_inbox")).all()
    }


def test_identical_content_under_new_ids_counts_once_within_the_window(bosun_home):
    inbox = Inbox(settings.database_url())
    out = run(
        inbox,
        DeliveryPolicy(content_window_s=60),
        [ev(1, "a", "paid", 0), ev(2, "a", "paid", 30), ev(3, "a", "paid", 200)],
    )
    assert [e.key for e in out.kept] == ["s:e1", "s:e3"]  # e3 is outside the window
    assert out.counts["duplicate"] == 1 and statuses(inbox)["s:e2"] == "duplicate"
    # A later batch sees the stored hash too.
    later = run(inbox, DeliveryPolicy(content_window_s=60), [ev(4, "b", "paid", 210)])
    assert later.kept == [] and "same content as s:e3" in later.states[0]["reason"]


def test_a_burst_for_one_entity_is_processed_once_with_the_latest_state(bosun_home):
    inbox = Inbox(settings.database_url())
    burst = [ev(i, "a", f"v{i}", i * 0.5) for i in range(5)] + [ev(9, "b", "x", 1)]
    out = run(inbox, DeliveryPolicy(debounce_s=2), list(reversed(burst)))  # arrival order does not matter
    assert sorted(e.key for e in out.kept) == ["s:e4", "s:e9"]
    assert out.counts["debounced"] == 4
    assert all("superseded by" in s["reason"] for s in out.states)


def test_stale_events_are_ignored_or_processed_and_recorded_either_way(bosun_home):
    inbox = Inbox(settings.database_url())
    run(inbox, DeliveryPolicy(stale="ignore"), [ev(1, "a", "new", 100), ev(2, "b", "new", 100)])
    ignored = run(inbox, DeliveryPolicy(stale="ignore"), [ev(3, "a", "old", 50)])
    assert ignored.kept == [] and statuses(inbox)["s:e3"] == "stale"
    processed = run(inbox, DeliveryPolicy(stale="process"), [ev(4, "b", "old", 50)])
    assert [e.key for e in processed.kept] == ["s:e4"] and processed.stale_processed == ["s:e4"]
    with inbox.engine.connect() as conn:
        rows = {r.idempotency_key: (r.policy, r.newer_key) for r in conn.execute(sa.select(stale_events))}
    assert rows == {"s:e3": ("ignore", "s:e1"), "s:e4": ("process", "s:e2")}
    # Within one batch, arrival order is corrected, not punished.
    fresh = run(inbox, DeliveryPolicy(stale="ignore"), [ev(6, "c", "2", 20), ev(5, "c", "1", 10)])
    assert [e.key for e in fresh.kept] == ["s:e5", "s:e6"]
