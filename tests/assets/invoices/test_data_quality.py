"""Great Expectations suites on the invoice context and outcome frames, as asset check results."""

import time

import dagster as dg
import pandas as pd

from assets.invoices.data_quality import (
    CONTEXT_SUITE,
    OUTCOMES_SUITE,
    context_frame,
    context_meets_expectations,
    outcomes_frame,
)
from orchestration.verification import expectations


def _evaluations(world, batch, names):
    out = {}
    for run in world.instance.get_runs():
        if run.tags.get("dagster/partition") != batch:
            continue
        for rec in world.instance.get_records_for_run(run.run_id).records:
            ev = rec.event_log_entry.dagster_event
            if ev is not None and ev.event_type_value == "ASSET_CHECK_EVALUATION":
                data = ev.event_specific_data
                if data.check_name in names:
                    out[data.check_name] = data
    return out


def test_a_real_batch_meets_both_suites_and_the_results_carry_the_details(make_small_world, capsys):
    world = make_small_world(n=150)
    world.ingest_sample()
    report = world.run_pending()
    assert report.batches and not report.failed and not report.check_failures
    found = _evaluations(world, report.batches[0], {"context_meets_expectations", "outcomes_meet_expectations"})
    assert set(found) == {"context_meets_expectations", "outcomes_meet_expectations"}
    for name, ev in found.items():
        assert ev.passed, name
        results = ev.metadata["results"].value
        assert results and all(r["success"] for r in results)
        assert ev.metadata["rows"].value > 100
    with capsys.disabled():
        print(
            f"\nGE per batch of {found['context_meets_expectations'].metadata['rows'].value} events: "
            f"context {found['context_meets_expectations'].metadata['validation_seconds'].value:.3f} s, "
            f"outcomes {found['outcomes_meet_expectations'].metadata['validation_seconds'].value:.3f} s; "
            f"first use in the process (GX import) "
            f"{found['context_meets_expectations'].metadata['setup_seconds'].value:.2f} s"
        )


def _context_records(n=4):
    return [
        {
            "key": f"src:{i}",
            "event_id": str(i),
            "context_hash": "0123456789abcdef",
            "invoice": {
                "invoice_id": f"INV-{i}",
                "vendor_id": "V1",
                "po_number": "PO-1",
                "amount": "100.00",
                "currency": "EUR",
            },
            "quality_factors": [{"name": "stale_source:vendors", "penalty": 0.05}],
            "assembly": {"tokens": 120},
        }
        for i in range(n)
    ]


def test_bad_context_fails_the_check_naming_the_expectation_and_values():
    good = _context_records()
    assert context_meets_expectations(good).passed
    bad = _context_records()
    bad[1]["key"] = bad[0]["key"]  # a duplicated event
    bad[2]["invoice"]["currency"] = "XBT"  # a currency the workflow does not pay in
    bad[3]["invoice"]["vendor_id"] = None  # no vendor
    result = context_meets_expectations(bad)
    assert not result.passed
    failed = result.metadata["failed_expectations"].value
    assert failed == [
        "expect_column_values_to_be_unique(key)",
        "expect_column_values_to_not_be_null(vendor_id)",
        "expect_column_values_to_be_in_set(currency)",
    ]
    assert result.severity == dg.AssetCheckSeverity.ERROR  # blocking: the batch is not decided on
    by_name = {r["expectation"]: r for r in result.metadata["results"].value}
    assert by_name["expect_column_values_to_be_in_set(currency)"]["unexpected_values"] == ["XBT"]
    assert by_name["expect_column_values_to_be_unique(key)"]["unexpected_count"] == 2


def test_only_an_unfamiliar_currency_warns_without_stopping_the_batch():
    records = _context_records()
    records[0]["invoice"]["currency"] = "SEK"
    result = context_meets_expectations(records)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["failed_expectations"].value == ["expect_column_values_to_be_in_set(currency)"]


def _decision(key, decision, route, confidence=0.95, po_amount="100.00"):
    return {
        "key": key,
        "final_decision": decision,
        "route": route,
        "confidence": confidence,
        "invoice": {"currency": "EUR"},
        "context_used": {"po_amount": po_amount},
    }


def test_bad_outcomes_fail_naming_the_expectation():
    decisions = [
        _decision("a", "approve", "act"),
        _decision("b", "reject", "record"),
        _decision("c", "approve", "act", confidence=1.3),
        _decision("d", "hold", "record"),
    ]
    states = {"a": "done", "b": "done", "c": "done", "d": "done"}
    paid = {
        "schedule_payment:a": {"amount": 101.5, "currency": "EUR"},  # within 2 % of the PO
        "schedule_payment:c": {"amount": 150.0, "currency": "USD"},  # over the PO, wrong currency
        "schedule_payment:d": {"amount": 10.0, "currency": "EUR"},
    }  # paid though held
    v = expectations.validate(outcomes_frame(decisions, states, paid), OUTCOMES_SUITE)
    failed = {r["expectation"]: r for r in v["results"] if not r["success"]}
    assert set(failed) == {
        "expect_column_values_to_be_between(confidence)",
        "expect_column_pair_values_a_to_be_greater_than_b(po_limit, paid_amount)",
        "expect_column_pair_values_to_be_equal(paid_currency, currency)",
        "expect_column_values_to_be_in_set(paid_without_approval)",
    }
    assert failed["expect_column_values_to_be_between(confidence)"]["unexpected_values"] == [1.3]
    ok = [d for d in decisions if d["key"] in ("a", "b")]
    assert expectations.validate(
        outcomes_frame(ok, states, {"schedule_payment:a": paid["schedule_payment:a"]}), OUTCOMES_SUITE
    )["success"]


def test_validation_cost_per_batch_of_1000(capsys):
    records = _context_records(1000)
    frame = context_frame(records)
    expectations.validate(frame, CONTEXT_SUITE)  # the process's first call builds the context
    started = time.perf_counter()
    for _ in range(3):
        assert expectations.validate(frame, CONTEXT_SUITE)["success"]
    per_batch = (time.perf_counter() - started) / 3
    with capsys.disabled():
        print(f"\nGE context suite on 1,000 rows: {per_batch * 1000:.0f} ms per batch")
    assert per_batch < 2.0
    assert isinstance(frame, pd.DataFrame)


def test_a_saga_resumed_after_a_crash_counts_as_the_approval_that_planned_it():
    # The re-run recomputes "hold" (its own payment now counts against the PO), but the saga
    # planned by the first run's approval is finished from the log: not a payment without approval.
    decisions = [_decision("a", "hold", "record")]
    paid = {"schedule_payment:a": {"amount": 100.0, "currency": "EUR"}}
    frame = outcomes_frame(decisions, {"a": "done"}, paid, sagas={"a"})
    assert frame.loc[0, "decision"] == "approve" and frame.loc[0, "recomputed_decision"] == "hold"
    assert expectations.validate(frame, OUTCOMES_SUITE)["success"]
    assert not expectations.validate(outcomes_frame(decisions, {"a": "done"}, paid), OUTCOMES_SUITE)["success"]
