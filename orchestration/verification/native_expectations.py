"""The column-map expectations of Great Expectations, evaluated on a pandas frame without GX.

Only what the shipped suites use, with GX 1.x's semantics: a missing value (None, NaN) is
no unexpected value, except for `expect_column_values_to_not_be_null`; `mostly` is the share
of non-missing values that must be expected; `unexpected_percent` is of the non-missing
values (of all rows for not-null); the unexpected values are listed in row order. A suite with
any other expectation type, a kwarg not handled here, a missing column or a value that cannot
be compared raises `NotNative`, and the caller runs GX instead: this module never guesses.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class NotNative(Exception):
    """The suite or the frame needs Great Expectations itself."""


_COMMON = {"column", "mostly", "result_format", "meta", "catch_exceptions"}
_KWARGS = {
    "expect_column_values_to_be_unique": _COMMON,
    "expect_column_values_to_not_be_null": _COMMON,
    "expect_column_values_to_be_in_set": _COMMON | {"value_set"},
    "expect_column_values_to_be_between": _COMMON | {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_match_regex": _COMMON | {"regex"},
    "expect_column_pair_values_a_to_be_greater_than_b": {
        "column_A",
        "column_B",
        "or_equal",
        "ignore_row_if",
        "mostly",
        "result_format",
        "meta",
        "catch_exceptions",
    },
    "expect_column_pair_values_to_be_equal": {
        "column_A",
        "column_B",
        "ignore_row_if",
        "mostly",
        "result_format",
        "meta",
        "catch_exceptions",
    },
}


def validate(frame: pd.DataFrame, expectations: list[dict], partial: int) -> list[dict]:
    """One result row per expectation (as expectations.validate reports them)."""
    for e in expectations:
        allowed = _KWARGS.get(e.get("type"))
        if allowed is None or set(e.get("kwargs") or {}) - allowed:
            raise NotNative(e.get("type"))
    return [_one(frame, e, partial) for e in expectations]


def _name(kind: str, kw: dict) -> str:
    cols = [kw[k] for k in ("column", "column_A", "column_B") if kw.get(k)]
    return f"{kind}({', '.join(map(str, cols))})"


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise NotNative(f"no column {name}")
    return frame[name]


def _one(frame: pd.DataFrame, e: dict, partial: int) -> dict:
    kind, kw = e["type"], dict(e.get("kwargs") or {})
    mostly = kw.get("mostly", 1.0)
    n = len(frame)
    try:
        if kind.startswith("expect_column_pair_"):
            a, b = _column(frame, kw["column_A"]), _column(frame, kw["column_B"])
            ignore = kw.get("ignore_row_if", "both_values_are_missing")
            if ignore == "both_values_are_missing":
                keep = ~(a.isna() & b.isna())
            elif ignore == "either_value_is_missing":
                keep = ~(a.isna() | b.isna())
            elif ignore == "neither":
                # imported when used: the code location loads without pandas (code server RSS, run start)
                import pandas as pd

                keep = pd.Series(True, index=frame.index)
            else:
                raise NotNative(f"ignore_row_if={ignore}")
            a, b = a[keep], b[keep]
            if kind == "expect_column_pair_values_to_be_equal":
                ok = a == b
            else:
                ok = (a >= b) if kw.get("or_equal") else (a > b)
            bad = ~ok.astype(bool)
            considered = int(keep.sum())
            values = [[x, y] for x, y in zip(a[bad].tolist()[:partial], b[bad].tolist()[:partial])]
        else:
            col = _column(frame, kw["column"])
            missing = col.isna()
            if kind == "expect_column_values_to_not_be_null":
                bad, considered, values = missing, n, col[missing].tolist()[:partial]
            else:
                present = col[~missing]
                bad = ~_expected(kind, kw, present).astype(bool)
                considered = len(present)
                values = present[bad].tolist()[:partial]
    except (TypeError, ValueError, re.error) as exc:
        raise NotNative(str(exc)) from exc
    unexpected = int(bad.sum())
    success = True if considered == 0 else (considered - unexpected) / considered >= mostly
    row: dict[str, Any] = {
        "expectation": _name(kind, kw),
        "success": bool(success),
        "severity": e.get("severity") or "critical",
        "element_count": n,
        "unexpected_count": unexpected,
        "unexpected_percent": (unexpected / considered * 100) if considered else None,  # GX's rounding
    }
    if values:
        row["unexpected_values"] = values
    return row


def _expected(kind: str, kw: dict, values: pd.Series) -> pd.Series:
    if kind == "expect_column_values_to_be_unique":
        return ~values.duplicated(keep=False)
    if kind == "expect_column_values_to_be_in_set":
        return values.isin(list(kw["value_set"]))
    if kind == "expect_column_values_to_match_regex":
        if not all(isinstance(v, str) for v in values):
            raise NotNative("a value that is no string")
        return values.str.contains(kw["regex"], regex=True)
    if kind == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if lo is None and hi is None:
            raise NotNative("between without bounds")
        import pandas as pd

        ok = pd.Series(True, index=values.index)
        if lo is not None:
            ok &= (values > lo) if kw.get("strict_min") else (values >= lo)
        if hi is not None:
            ok &= (values < hi) if kw.get("strict_max") else (values <= hi)
        return ok
    raise NotNative(kind)
