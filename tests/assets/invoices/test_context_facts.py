"""The facts a decision is made from must not change because the event's own payment
already exists (a re-run of a batch whose run died after paying)."""

from assets.invoices.context import assemble_context
from assets.invoices.workflow import EVENT_TYPES
from orchestration.action.batch import action_key


def test_an_events_own_payment_does_not_count_against_its_purchase_order(world):
    world.ingest_sample()
    inbox, erp = world.resources["bosun_db"].inbox(), world.resources["erp"]
    events = inbox.events_between(1, 10**9, EVENT_TYPES)
    vendors, pos = erp.vendors_frame(), erp.purchase_orders_frame()

    def facts():
        return {r["key"]: r["facts"] for r in assemble_context(events, vendors, pos, erp, None)}

    before = facts()
    # Payable invoices that use most of their PO: their own payment alone would push them over.
    payable = [
        e
        for e in events
        if (f := before[e.key])["po_open"]
        and not f["already_paid"]
        and f["amount_over_po_ratio"] is not None
        and -0.5 < f["amount_over_po_ratio"] <= 0.02
    ]
    assert payable, "the sample should have invoices that use most of their purchase order"
    ev = payable[0]
    p = ev.envelope.payload
    erp.schedule_payments(
        [
            {
                "key": action_key(ev.key, "schedule_payment"),
                "invoice_id": p["invoice_id"],
                "vendor_id": p["vendor_id"],
                "po_number": p["po_number"],
                "amount": p["amount"],
                "currency": p["currency"],
                "due_on": p["due_on"],
            }
        ]
    )
    after = facts()
    assert after[ev.key] == before[ev.key]
    assert not after[ev.key]["already_paid"]  # its own payment is not "paid elsewhere"
