"""The Great Expectations runner: a suite file on a frame becomes an asset check result."""

import json
import subprocess
import sys

import dagster as dg
import pandas as pd

from orchestration.verification import expectations

SUITE = {
    "name": "orders",
    "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": 0, "strict_min": True},
        },
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "currency", "value_set": ["EUR", "USD"]}},
    ],
}


def _suite(tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(SUITE))
    return path


def test_a_frame_meeting_the_suite_passes_with_every_expectation_in_the_metadata(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3], "amount": [1.5, 2.0, 9.0], "currency": ["EUR", "USD", "EUR"]})
    result = expectations.check_result(frame, _suite(tmp_path), "orders_ok", dg.AssetKey("orders"))
    assert result.passed and result.check_name == "orders_ok"
    details = result.metadata["results"].value
    assert [d["expectation"] for d in details] == [
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_be_in_set(currency)",
    ]
    assert all(d["success"] and d["unexpected_count"] == 0 for d in details)
    assert result.metadata["failed_expectations"].value == [] and result.metadata["rows"].value == 3


def test_bad_rows_fail_naming_the_expectation_with_counts_and_values(tmp_path):
    frame = pd.DataFrame(
        {"id": [1, 1, 3, 4], "amount": [1.0, -2.0, 0.0, 5.0], "currency": ["EUR", "EUR", "XBT", "USD"]}
    )
    result = expectations.check_result(frame, _suite(tmp_path), "orders_ok", dg.AssetKey("orders"))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["failed_expectations"].value == [
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_be_in_set(currency)",
    ]
    by_name = {d["expectation"]: d for d in result.metadata["results"].value}
    assert by_name["expect_column_values_to_be_between(amount)"]["unexpected_count"] == 2
    assert sorted(by_name["expect_column_values_to_be_between(amount)"]["unexpected_values"]) == [-2.0, 0.0]
    assert by_name["expect_column_values_to_be_in_set(currency)"]["unexpected_values"] == ["XBT"]
    assert "expect_column_values_to_be_unique(id)" in result.description


def test_an_edited_suite_file_is_read_again(tmp_path):
    path = _suite(tmp_path)
    frame = pd.DataFrame({"id": [1], "amount": [1.0], "currency": ["GBP"]})
    assert not expectations.validate(frame, path)["success"]
    edited = json.loads(path.read_text())
    edited["expectations"][2]["kwargs"]["value_set"].append("GBP")
    path.write_text(json.dumps(edited))
    import os

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert expectations.validate(frame, path)["success"]


def test_importing_the_runner_does_not_import_great_expectations():
    code = (
        "import sys, orchestration.verification.expectations, orchestration.cli, orchestration.definitions; "
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Frames that break the shipped suites in every way they can be broken (nulls, duplicates,
# out-of-set values, bounds, strict bounds, regex, column pairs with missing values), and
# frames that meet them: the native evaluator must say exactly what GX says.
def _shipped_frames():
    import numpy as np

    context = pd.DataFrame(
        {
            "key": ["a", "b", "b", None, "e"],
            "event_id": [1, 2, 3, 4, 5],
            "invoice_id": ["i", None, "k", "l", "m"],
            "vendor_id": ["v"] * 5,
            "po_number": [None] * 5,
            "amount": [10.0, 0.0, np.nan, 2e8, 5.0],
            "currency": ["EUR", "XBT", None, "USD", "GBP"],
            "context_quality": [0.5, 1.0, 1.2, -0.1, None],
            "max_penalty": [0.0, 0.1, 0.2, 0.3, 0.4],
            "tokens": [1, 0, None, 5, 7],
            "context_hash": ["0123456789abcdef", "zz", None, "0123456789ABCDEF", "0123456789abcdef0"],
        }
    )
    outcomes = pd.DataFrame(
        {
            "key": ["a", "a", "c", "d"],
            "decision": ["approve", "pay", "hold", "reject"],
            "recomputed_decision": ["x"] * 4,
            "route": ["act", "record", "nope", "escalate"],
            "confidence": [0.1, 1.5, None, 1.0],
            "state": ["done", "weird", "received", "escalated"],
            "currency": ["EUR", "USD", "EUR", "EUR"],
            "paid_amount": [10.0, -1.0, 0.0, 5.0],
            "paid_currency": ["EUR", "EUR", None, "USD"],
            "po_limit": [5.0, 100.0, 0.0, 5.0],
            "paid_without_approval": [False, True, False, False],
        }
    )
    return [(context, "invoice_context"), (context.iloc[[0, 4]], "invoice_context"), (outcomes, "invoice_outcomes")] + [
        (outcomes.iloc[[i]], "invoice_outcomes") for i in range(4)
    ]


def test_the_native_evaluator_says_what_great_expectations_says(tmp_path):
    from pathlib import Path

    suites = Path(__file__).resolve().parents[2] / "assets" / "invoices" / "expectations"
    cases = [(f, suites / f"{name}.json") for f, name in _shipped_frames()]
    orders = _suite(tmp_path)
    cases += [
        (pd.DataFrame({"id": [1, 2, 3], "amount": [1.5, 2.0, 9.0], "currency": ["EUR", "USD", "EUR"]}), orders),
        (
            pd.DataFrame(
                {"id": [1, 1, 3, 4], "amount": [1.0, -2.0, 0.0, 5.0], "currency": ["EUR", "EUR", "XBT", "USD"]}
            ),
            orders,
        ),
    ]
    keys = ("expectation", "success", "severity", "element_count", "unexpected_count", "unexpected_percent")
    for frame, suite in cases:
        native, gx = (
            expectations.validate(frame, suite, engine="native"),
            expectations.validate(frame, suite, engine="gx"),
        )
        assert (native["engine"], gx["engine"]) == ("native", "gx")
        assert native["success"] == gx["success"]
        for n, g in zip(native["results"], gx["results"], strict=True):
            assert {k: n.get(k) for k in keys} == {k: g.get(k) for k in keys}
            assert json.dumps(n.get("unexpected_values")) == json.dumps(g.get("unexpected_values"))


def test_a_suite_the_native_evaluator_does_not_know_goes_to_great_expectations(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(
        json.dumps(
            {
                "name": "other",
                "expectations": [
                    {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "x", "max_value": 1}}
                ],
            }
        )
    )
    frame = pd.DataFrame({"x": [0.5, 3.0]})
    result = expectations.validate(frame, path)
    assert result["engine"] == "gx" and not result["success"]
    # A column the frame lacks: GX says what is wrong, the native path does not guess.
    assert expectations.validate(pd.DataFrame({"y": [1]}), _suite(tmp_path))["engine"] == "gx"


def test_the_batch_frames_have_the_engine_columns_and_the_workflow_s_own_even_when_empty():
    from orchestration.verification import frames

    own = lambda r: {"amount": r["order"]["amount"]}  # noqa: E731
    records = [
        {"key": "a", "event_id": "e1", "order": {"amount": 5}, "quality_factors": [{"penalty": 0.5}, {"penalty": 0.2}]},
        {"key": "b", "event_id": "e2", "order": {"amount": 7}, "assembly": {"tokens": 12}, "context_hash": "h"},
    ]
    frame = frames.context_frame(records, own, ["amount"])
    assert list(frame.columns) == [
        "key",
        "event_id",
        "amount",
        "context_quality",
        "max_penalty",
        "tokens",
        "context_hash",
    ]
    assert frame["context_quality"].round(4).tolist() == [0.4, 1.0] and frame["max_penalty"].tolist() == [0.5, 0.0]
    assert list(frames.context_frame([], own, ["amount"]).columns) == list(frame.columns)
    decisions = [{"key": "a", "final_decision": "hold", "route": "record", "confidence": 0.9}]
    acted = frames.outcome_frame(decisions, {"a": "done"}, "ship", lambda d, on: {"shipped": on == "ship"}, ["shipped"])
    again = frames.outcome_frame(decisions, {}, "ship", lambda d, on: {"shipped": on == "ship"}, ["shipped"], {"a"})
    assert acted.iloc[0][["decision", "state", "shipped"]].tolist() == ["hold", "done", False]
    # A saga already in the log was planned by an approval: it is what was acted on.
    assert again.iloc[0][["decision", "recomputed_decision", "state", "shipped"]].tolist() == [
        "ship",
        "hold",
        "unknown",
        True,
    ]
