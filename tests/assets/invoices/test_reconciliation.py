"""The daily reconciliation of ledger entries against payments, one Berlin day per partition."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg

from assets.invoices.erp import ERPResource, ledger_entries, payments
from assets.invoices.reconciliation import payment_reconciliation

BERLIN = ZoneInfo("Europe/Berlin")


def _row(key, invoice, amount, at, status, stamp):
    return {
        "idempotency_key": key,
        "invoice_id": invoice,
        "vendor_id": "V1",
        "po_number": "PO-1",
        "amount": amount,
        "currency": "EUR",
        "status": status,
        stamp: at,
    }


def test_a_day_with_a_ledger_entry_but_no_payment_fails_its_check(tmp_path):
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    day = datetime(2026, 11, 9, 23, 30, tzinfo=BERLIN)  # late evening in Berlin, still the 9th
    utc = lambda at: at.astimezone(timezone.utc)  # noqa: E731  (the ERP stamps in UTC)
    with erp.engine.begin() as conn:
        conn.execute(
            ledger_entries.insert(),
            [
                _row("l1", "INV-1", "100.00", utc(day), "posted", "posted_at"),
                _row("l2", "INV-2", "50.00", utc(day), "posted", "posted_at"),
                # 00:30 in Berlin, the 10th, though still the 9th in UTC.
                _row("l3", "INV-3", "70.00", utc(day + timedelta(hours=1)), "posted", "posted_at"),
            ],
        )
        conn.execute(
            payments.insert(),
            [_row("p1", "INV-1", "100.00", utc(day), "scheduled", "scheduled_at")],
        )
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            [payment_reconciliation], partition_key="2026-11-09", instance=instance, resources={"erp": erp}
        )
        (check,) = result.get_asset_check_evaluations()
        assert check.partition == "2026-11-09" and not check.passed
        assert check.metadata["mismatches"].value == 1
        assert check.metadata["examples"].value == [{"invoice_id": "INV-2", "ledger": "50.00", "payments": "None"}]
        nextday = dg.materialize(
            [payment_reconciliation], partition_key="2026-11-10", instance=instance, resources={"erp": erp}
        )
        assert nextday.get_asset_check_evaluations()[0].metadata["mismatches"].value == 1  # INV-3


def test_a_day_without_entries_or_payments_warns_no_data_instead_of_passing(tmp_path):
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            [payment_reconciliation], partition_key="2026-11-08", instance=instance, resources={"erp": erp}
        )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("no data")


def test_todays_payments_have_a_partition_before_the_day_ends():
    from assets.invoices.reconciliation import reconciliation_days

    assert reconciliation_days.get_last_partition_key() == datetime.now(BERLIN).date().isoformat()
