"""The batch's outcome reconciled three ways: the events' recorded outcomes, the payment
sagas in the log, and the targets: the ERP's ledger entries and payments, and the vendor
notices in the notification outbox.

Every approved invoice has a done saga with a posted ledger entry, a scheduled payment and a
live notice of the invoice's amount and currency (or its saga was compensated, refused or escalated,
with a reason); a live ERP row under one of the batch's keys needs its saga step done, and
a live row for one of the batch's invoices under any other key needs a saga that wrote it
(else it was written by hand); a rejected, held or escalated invoice has no live effect.
"""

from __future__ import annotations

from decimal import Decimal

from assets.invoices.erp import ERPResource
from assets.invoices.payment_saga import payment_plan
from assets.invoices.workflow import EVENT_TYPES
from orchestration.trigger.batching import BatchRange
from orchestration.verification.outcome_reconciliation import (
    Effect,
    EventRecord,
    Reconciliation,
    batch_effects,
    reconcile_batch_with_targets,
)
from resources.database import BosunDatabase
from resources.outbox import LIVE, NotificationOutbox

# The payment saga's steps in order (the plan's own, so the two cannot drift apart).
STEPS = tuple(payment_plan(ERPResource()).order)
# What every effect of an invoice's saga carries, as the invoice has it.
EXPECTED = ("amount", "currency", "vendor_id", "invoice_id")


def entity(vendor_id: str, invoice_id: str) -> str:
    return f"invoice {vendor_id}/{invoice_id}"


def event_record(row: dict) -> EventRecord:
    p, outcome = row["payload"] or {}, row["outcome"] or {}
    return EventRecord(
        key=row["idempotency_key"],
        state=row["status"],
        entity=entity(p.get("vendor_id"), p.get("invoice_id")),
        claims_effect=row["status"] == "done" and bool(outcome.get("payment_key")),
        expected={**{f: p.get(f) for f in EXPECTED}, "amount": Decimal(str(p["amount"]))},
    )


def notice_effects(outbox: NotificationOutbox, keys: list[str]) -> list[dict]:
    """The notices under these keys, shaped as the ERP's effects (a correction has its own
    key and retracts a notice, so it is not an effect of the saga)."""
    keys = [k for k in keys if k.startswith("notify_vendor:")]
    return [
        {
            "idempotency_key": k,
            "live": m["status"] in LIVE,
            "vendor_id": m["recipient"],
            "invoice_id": m["entity"],
            "amount": Decimal(str(m["body"].get("amount"))),
            "currency": m["body"].get("currency"),
        }
        for k, m in outbox.messages(keys).items()
    ]


def reconcile_batch(
    batch: BatchRange, bosun_db: BosunDatabase, erp: ERPResource, outbox: NotificationOutbox
) -> Reconciliation:
    def effects_of(keys: list[str], events: list[EventRecord]) -> list[Effect]:
        invoice_ids = sorted({str(e.expected["invoice_id"]) for e in events})
        found = erp.effects_for(keys, invoice_ids) + notice_effects(outbox, keys)
        return batch_effects(found, keys, events, lambda r: entity(r["vendor_id"], r["invoice_id"]), EXPECTED)

    return reconcile_batch_with_targets(batch.key, bosun_db, EVENT_TYPES, STEPS, event_record, effects_of)
