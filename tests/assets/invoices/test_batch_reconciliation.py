"""The batch's outcome reconciled against the saga log, the ERP and the notification outbox,
on SQLite and Postgres: passes after a real run, fails naming the events once a target is
changed behind the sagas' back."""

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from assets.invoices.batch import checks
from assets.invoices.erp import ledger_entries, payments
from resources.outbox import notifications

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

CHECK = "decisions_reconcile_with_saga_log_and_erp"
(invoice_outcome_checks,) = [c for c in checks if any(k.name == CHECK for k in c.check_keys)]


def _run_outcome_checks(world, batch: str) -> dict:
    """Only the batch's outcome checks, as a check-only run (what a re-check from the UI does)."""
    job = world.defs.resolve_job_def("invoice_batch_job").get_subset(
        asset_check_selection=set(invoice_outcome_checks.check_keys), asset_selection=set()
    )
    result = job.execute_in_process(partition_key=batch, instance=world.instance, raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _inbox_rows(world, batch_id):
    from orchestration.core.db import inbox

    with world.resources["bosun_db"].inbox().engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(inbox.c.idempotency_key, inbox.c.status, inbox.c.outcome, inbox.c.payload)
                .where(inbox.c.batch_id == batch_id)
                .order_by(inbox.c.seq)
            ).mappings()
        ]


def test_reconciliation_passes_then_names_the_events_altered_behind_the_sagas_back(world):
    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    batch = report.batches[0]
    first = _run_outcome_checks(world, batch)[CHECK]
    assert first.passed, first.metadata["examples"].value
    assert first.metadata["live_effects"].value > 0 and first.metadata["discrepancies"].value == 0

    rows = _inbox_rows(world, batch)
    paid = [r for r in rows if r["status"] == "done" and (r["outcome"] or {}).get("payment_key")]
    not_paid = [r for r in rows if r["status"] in ("escalated", "done") and not (r["outcome"] or {}).get("payment_key")]
    amount_edited, ledger_reversed, invoice_of_orphan, notice_cancelled = paid[0], paid[1], paid[2], paid[3]
    paid_by_hand = not_paid[0]
    erp = world.resources["erp"]
    now = datetime.now(timezone.utc)
    p = paid_by_hand["payload"]
    with erp.engine.begin() as conn:  # raw SQL: nothing here goes through a saga
        conn.execute(
            payments.update()
            .where(payments.c.idempotency_key == f"schedule_payment:{amount_edited['idempotency_key']}")
            .values(amount=payments.c.amount + 10)
        )
        conn.execute(
            ledger_entries.update()
            .where(ledger_entries.c.idempotency_key == f"post_ledger_entry:{ledger_reversed['idempotency_key']}")
            .values(status="reversed", reversed_at=now)
        )
        conn.execute(
            payments.insert().values(
                idempotency_key=f"schedule_payment:{paid_by_hand['idempotency_key']}",
                invoice_id=p["invoice_id"],
                vendor_id=p["vendor_id"],
                po_number=p["po_number"],
                amount=p["amount"],
                currency=p["currency"],
                status="scheduled",
                scheduled_at=now,
            )
        )
        o = invoice_of_orphan["payload"]
        conn.execute(
            ledger_entries.insert().values(
                idempotency_key="manual-fix-0001",
                invoice_id=o["invoice_id"],
                vendor_id=o["vendor_id"],
                po_number=o["po_number"],
                amount=o["amount"],
                currency=o["currency"],
                status="posted",
                posted_at=now,
            )
        )
    with world.resources["outbox"].engine.begin() as conn:
        conn.execute(
            notifications.update()
            .where(notifications.c.idempotency_key == f"notify_vendor:{notice_cancelled['idempotency_key']}")
            .values(status="cancelled", voided_at=now)
        )

    check = _run_outcome_checks(world, batch)[CHECK]
    assert not check.passed
    named = check.metadata["events_with_discrepancies"].value
    assert {
        amount_edited["idempotency_key"],
        ledger_reversed["idempotency_key"],
        paid_by_hand["idempotency_key"],
        "manual-fix-0001",
        notice_cancelled["idempotency_key"],
    } <= set(named)
    kinds = check.metadata["discrepancies_by_kind"].value
    assert kinds["effect_mismatch"] == 1 and kinds["effect_missing"] == 2
    assert kinds["live_effect_without_saga"] == 1 and kinds["live_effect_without_saga_step"] == 1
    examples = {(d["kind"], d.get("event") or d["target_key"]): d for d in check.metadata["examples"].value}
    mismatch = examples[("effect_mismatch", amount_edited["idempotency_key"])]
    assert mismatch["step"] == "schedule_payment" and "amount is" in mismatch["detail"]
    missing = {d["event"]: d["step"] for d in check.metadata["examples"].value if d["kind"] == "effect_missing"}
    assert missing[notice_cancelled["idempotency_key"]] == "notify_vendor"
    assert check.description.startswith("5 discrepancies")
