"""invoice.received v1 and v2: v1 is upcast on the way in, unknown versions and types are refused."""

import copy

import dagster as dg
import pytest
import sqlalchemy as sa

from assets.invoices.workflow import registry
from orchestration.core.db import inbox as inbox_table
from orchestration.trigger.envelope import PayloadRegistry, RejectedInput, parse_envelope
from orchestration.trigger.inbox import TERMINAL_STATES

V1 = {
    "source": "mailroom",
    "id": "e-1",
    "type": "invoice.received",
    "schema_version": 1,
    "occurred_at": "2026-11-02T08:00:00+01:00",
    "entity_key": "V0001:INV-1",
    "payload": {
        "invoice_id": "INV-1",
        "vendor_id": "V0001",
        "po_number": "PO-1",
        "amount": "100.00",
        "currency": "EUR",
        "issued_on": "2026-11-01",
        "due_on": "2026-12-01",
        "line_items": [{"description": "bolts", "quantity": "2", "unit_price": "50.00"}],
        "memo": "please pay by friday",
    },
}


def as_v2(event: dict, **payload_changes) -> dict:
    event = copy.deepcopy(event)
    event["schema_version"] = 2
    event["payload"]["note"] = event["payload"].pop("memo")
    event["payload"].update(payload_changes)
    return event


def test_v1_is_upcast_to_the_current_version():
    env = parse_envelope(V1, registry)
    assert env.schema_version == 2 == registry.current_version("invoice.received")
    assert env.payload["note"] == "please pay by friday" and "memo" not in env.payload
    assert env.payload["channel"] == "unknown"  # the added field's default


def test_v2_is_taken_as_sent():
    env = parse_envelope(as_v2(V1, channel="edi"), registry)
    assert env.payload["channel"] == "edi" and env.payload["note"] == "please pay by friday"


@pytest.mark.parametrize(
    "event,field",
    [
        ({**V1, "schema_version": 3}, "schema_version"),
        ({**V1, "type": "invoice.voided"}, "type"),
        (as_v2(V1, memo="old name"), "payload.memo"),
        (as_v2(V1, channel="fax"), "payload.channel"),
        ({**V1, "payload": {**V1["payload"], "note": "new name in v1"}}, "payload.note"),
    ],
)
def test_unknown_versions_types_and_fields_are_rejected_naming_the_field(event, field):
    with pytest.raises(RejectedInput) as exc:
        parse_envelope(event, registry)
    assert exc.value.reason.startswith(field), exc.value.reason


def test_unknown_version_lists_the_known_ones():
    with pytest.raises(RejectedInput, match="known versions: 1, 2"):
        parse_envelope({**V1, "schema_version": 3}, registry)


def test_a_version_without_upcaster_is_refused_at_registration():
    reg = PayloadRegistry()
    reg.register("t", 1, dg.Config)
    reg.register("t", 2, dg.Config)
    with pytest.raises(ValueError, match="t v1 has no upcaster"):
        reg.check_complete()


def test_the_workflow_processes_v1_and_v2_events_alike(world):
    """Half the sample sent as v2: every event reaches a terminal state, the inbox holds v2
    payloads only, and the renamed field still feeds the memo guard (PII redacted)."""
    from orchestration.definitions import payload_registry
    from orchestration.trigger.sample_events import read_events

    raw = read_events(world.sample / "invoices.jsonl")
    mixed = [as_v2(e) if i % 2 else e for i, e in enumerate(raw)]
    inbox = world.resources["bosun_db"].inbox()
    summary = inbox.ingest(mixed, payload_registry)
    assert summary.rejected == []
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    counts = inbox.counts()
    assert counts["received"] == summary.accepted
    assert set(counts["by_status"]) <= set(TERMINAL_STATES) - {"rejected", "retried"}
    with inbox.engine.connect() as conn:
        rows = conn.execute(sa.select(inbox_table.c.schema_version, inbox_table.c.payload)).all()
    assert {v for v, _ in rows} == {2}
    assert all("memo" not in p and "note" in p for _, p in rows)
    mats = world.instance.fetch_materializations(dg.AssetKey("invoice_context"), limit=100).records
    assert sum(m.asset_materialization.metadata["pii_redacted"].value for m in mats) > 0
