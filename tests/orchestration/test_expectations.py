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
