import json

import pytest

from assets.invoices.workflow import registry
from orchestration.trigger.envelope import RejectedInput, parse_envelope


def envelope(**over):
    env = {
        "source": "erp-mailroom",
        "id": "evt-1",
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
            "memo": "",
        },
    }
    env.update(over)
    return env


def test_valid_envelope_parses_and_keys_by_source_and_id():
    env = parse_envelope(json.dumps(envelope()), registry)
    assert env.idempotency_key == "erp-mailroom:evt-1"
    assert env.occurred_at.utcoffset().total_seconds() == 3600
    assert env.payload["amount"] == "100.00"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"occurred_at": "2026-11-02T08:00:00"}, "occurred_at"),
        ({"schema_version": 0}, "schema_version"),
        ({"type": "invoice.paid"}, "type"),
        ({"schema_version": 9}, "schema_version"),
    ],
)
def test_invalid_envelopes_name_the_field(change, field):
    with pytest.raises(RejectedInput) as exc:
        parse_envelope(envelope(**change), registry)
    assert field in exc.value.reason


def test_invalid_payload_names_the_payload_field():
    bad = envelope()
    bad["payload"] = {**bad["payload"], "amount": 100.5}
    with pytest.raises(RejectedInput) as exc:
        parse_envelope(bad, registry)
    assert exc.value.reason.startswith("payload.amount")
    assert "decimal string" in exc.value.reason


def test_not_json_is_rejected_with_position():
    with pytest.raises(RejectedInput, match="not valid JSON"):
        parse_envelope('{"source": ', registry)
