"""Delayed outcome check: payments settled by their due date, read from the settlement feed
at a chosen evaluation moment, on SQLite and Postgres; and the seeded bank that fills the feed."""

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from assets.invoices.erp import ERPResource, payments
from assets.invoices.sample_settlements import simulate_settlements
from assets.invoices.settlements import evaluate, payment_settlements

pytestmark = pytest.mark.clock  # CI runs this module again with the clock a year ahead

BERLIN = ZoneInfo("Europe/Berlin")
DUE = date(2026, 11, 20)
SCHEDULED = datetime(2026, 11, 10, 9, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgres"])
def erp(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return ERPResource(url=url)


def _payment(key, amount="100.00", due=DUE, status="scheduled"):
    return {
        "idempotency_key": key,
        "invoice_id": f"INV-{key}",
        "vendor_id": "V1",
        "po_number": "PO-1",
        "amount": amount,
        "currency": "EUR",
        "due_on": due,
        "status": status,
        "scheduled_at": SCHEDULED,
    }


def _materialize(erp, tmp_path, day, as_of):
    (tmp_path / "dg").mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dg")) as instance:
        result = dg.materialize(
            [payment_settlements],
            partition_key=day,
            instance=instance,
            resources={"erp": erp},
            run_config={"ops": {"payment_settlements": {"config": {"as_of": as_of}}}},
        )
        (check,) = result.get_asset_check_evaluations()
        return check


def test_payments_due_on_a_day_fail_the_check_unless_settled_in_time(erp, tmp_path):
    end_of_due_day = datetime(2026, 11, 20, 23, 59, tzinfo=BERLIN)
    with erp.engine.begin() as conn:
        conn.execute(
            payments.insert(),
            [
                _payment("on-time"),
                _payment("late"),
                _payment("failed"),
                _payment("returned"),
                _payment("silent"),
                _payment("short"),
                _payment("cancelled", status="cancelled"),
                _payment("next-monday", due=date(2026, 11, 23)),
            ],
        )
    erp.record_settlements(
        [
            {
                "payment_key": "on-time",
                "status": "settled",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": end_of_due_day,
            },  # 23:59 Berlin is still the due day (22:59 UTC)
            {
                "payment_key": "late",
                "status": "settled",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": end_of_due_day + timedelta(minutes=2),
            },
            {
                "payment_key": "failed",
                "status": "failed",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": datetime(2026, 11, 19, 10, tzinfo=BERLIN),
                "reason": "account closed",
            },
            {
                "payment_key": "returned",
                "status": "settled",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": datetime(2026, 11, 19, 10, tzinfo=BERLIN),
            },
            {
                "payment_key": "returned",
                "status": "returned",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": datetime(2026, 11, 22, 10, tzinfo=BERLIN),
                "reason": "beneficiary unknown",
            },
            {
                "payment_key": "short",
                "status": "settled",
                "amount": "90.00",
                "currency": "EUR",
                "settled_at": datetime(2026, 11, 19, 10, tzinfo=BERLIN),
            },
        ]
    )
    # The bank re-sends a report: the feed keeps it once.
    erp.record_settlements(
        [
            {
                "payment_key": "failed",
                "status": "failed",
                "amount": "100.00",
                "currency": "EUR",
                "settled_at": datetime(2026, 11, 19, 10, tzinfo=BERLIN),
            }
        ]
    )

    # Evaluated at noon on the due day: nothing is overdue yet (the 23:59 settlement is not
    # reported yet either), but a failure or a wrong amount is already final.
    during = _materialize(erp, tmp_path, "2026-11-20", "2026-11-20T12:00:00+01:00")
    assert not during.passed
    assert during.metadata["failing_payment_keys"].value == {"failed": ["failed"], "amount_mismatch": ["short"]}
    assert during.metadata["not_yet_due"].value == 3  # on-time, late, silent
    assert during.metadata["settled_on_time"].value == 1  # returned, not yet returned at noon

    # Three days later: the return is reported, the late settlement too, one never came.
    check = _materialize(erp, tmp_path, "2026-11-20", "2026-11-23T09:00:00+01:00")
    assert not check.passed and check.partition == "2026-11-20"
    assert check.metadata["failing_payment_keys"].value == {
        "overdue_unsettled": ["silent"],
        "failed": ["failed"],
        "returned": ["returned"],
        "settled_late": ["late"],
        "amount_mismatch": ["short"],
    }
    assert check.metadata["payments_due"].value == 6  # the cancelled one is not owed, Monday's is another day
    assert check.metadata["settled_on_time"].value == 1
    assert "5 of 6 payments due 2026-11-20" in check.description
    examples = {d["payment_key"]: d for d in check.metadata["examples"].value}
    assert examples["failed"]["reason"] == "account closed" and examples["returned"]["reason"] == "beneficiary unknown"

    # Monday's payment, evaluated on the Saturday before: not yet due, so it passes.
    ahead = _materialize(erp, tmp_path, "2026-11-23", "2026-11-21T09:00:00+01:00")
    assert ahead.passed and ahead.metadata["not_yet_due"].value == 1


def test_the_seeded_bank_settles_most_payments_and_is_repeatable(tmp_path):
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    days = [DUE + timedelta(days=i % 10) for i in range(400)]
    with erp.engine.begin() as conn:
        conn.execute(payments.insert(), [_payment(f"p{i}", due=d) for i, d in enumerate(days)])
    as_of = datetime(2026, 12, 31, tzinfo=timezone.utc)
    first = simulate_settlements(erp, seed=5, as_of=as_of)
    assert first["payments"] == 400
    assert first["fates"]["on_time"] > 300 and first["fates"]["late"] > 10 and first["fates"]["failed"] > 5
    again = simulate_settlements(erp, seed=5, as_of=as_of)
    assert again["fates"] == first["fates"]
    with erp.engine.connect() as conn:
        import sqlalchemy as sa

        from assets.invoices.erp import settlements

        assert conn.execute(sa.select(sa.func.count()).select_from(settlements)).scalar_one() == first["reports"]
    result = evaluate(erp, datetime(2026, 11, 20, tzinfo=BERLIN), datetime(2026, 12, 1, tzinfo=BERLIN), as_of)
    counts = {v: len(rows) for v, rows in result.by_verdict.items()}
    assert counts["settled_on_time"] == first["fates"]["on_time"]
    assert counts["settled_late"] == first["fates"]["late"] and counts["failed"] == first["fates"]["failed"]
    assert counts["returned"] == first["fates"]["returned"]
    assert counts["overdue_unsettled"] == first["fates"]["silent"] and counts["not_yet_due"] == 0


def test_an_earlier_as_of_writes_only_what_the_bank_had_reported_by_then(tmp_path):
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    with erp.engine.begin() as conn:
        conn.execute(payments.insert(), [_payment(f"p{i}") for i in range(50)])
    early = simulate_settlements(erp, seed=1, as_of=datetime(2026, 11, 12, tzinfo=timezone.utc))
    assert early["reports"] == 0  # all due on the 20th, none settles 8 days early
    later = simulate_settlements(erp, seed=1, as_of=datetime(2026, 12, 31, tzinfo=timezone.utc))
    assert later["reports"] >= 45


def test_a_due_day_without_payments_warns_no_data_instead_of_passing(tmp_path):
    erp = ERPResource(url=f"sqlite:///{tmp_path / 'erp.db'}")
    check = _materialize(erp, tmp_path, "2026-11-22", "2026-11-23T09:00:00+01:00")  # a Sunday
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == "no data: no payment was due on 2026-11-22"
