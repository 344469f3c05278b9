"""Great Expectations suites (JSON files in the repo) run on a data frame, as asset check results.

Great Expectations takes seconds to import, so it is imported on first use, inside a
check, never at module import: `bosun status` and the other plain commands stay fast. A batch
run is a process of its own, so that import (~3 s) was paid by every batch: suites made only of
the column-map expectations `native_expectations.py` evaluates (the shipped ones) are run there
instead, with GX's verdicts, counts and values (tests/orchestration/test_expectations.py
compares both on the same frames); every other suite goes to GX.
One ephemeral (in-memory) context and pandas data source per process serve every
validation; a suite file is read once per process (and again when it changes).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import dagster as dg

from orchestration.action.saga_log import SagaLog

PARTIAL_UNEXPECTED = 5  # unexpected values kept per expectation: enough to see the pattern

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _context():
    """The process's ephemeral GX context and its whole-frame batch definition."""
    with _lock:
        if "batch_definition" not in _state:
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            # In memory, no usage statistics sent anywhere, no progress bars in the run logs.
            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
            )
            ctx = gx.get_context(mode="ephemeral", project_config=config)
            asset = ctx.data_sources.add_pandas("bosun").add_dataframe_asset("frame")
            _state.update(gx=gx, context=ctx, batch_definition=asset.add_batch_definition_whole_dataframe("whole"))
        return _state["gx"], _state["batch_definition"]


def load_suite(path: str | Path):
    """A suite from its JSON file (GX's own format: name, expectations with type and kwargs)."""
    gx, _ = _context()
    path = Path(path)
    stamp = (str(path), path.stat().st_mtime_ns)
    cached = _state.get("suites", {}).get(stamp[0])
    if cached and cached[0] == stamp[1]:
        return cached[1]
    raw = json.loads(path.read_text())
    suite = gx.ExpectationSuite(name=raw["name"], expectations=raw["expectations"], meta=raw.get("meta") or {})
    _state.setdefault("suites", {})[stamp[0]] = (stamp[1], suite)
    return suite


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars, Decimals, timestamps and NaN turned into plain values."""
    value = json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _name(config) -> str:
    kw = config.kwargs
    cols = [kw[k] for k in ("column", "column_A", "column_B") if kw.get(k)] or kw.get("column_list") or []
    return f"{config.type}({', '.join(map(str, cols))})"


def validate(frame, suite_path: str | Path, engine: str | None = None) -> dict:
    """Run a suite on a frame: success, and per expectation its success, observed value,
    unexpected count and percent, and a few unexpected values.

    `engine`: "native" evaluates a suite whose expectations are all of the column-map kinds
    `native_expectations.py` knows (the same verdicts, counts and values as GX, tested against
    it) without importing GX, which costs a batch run process ~3 s; any other suite, and any
    frame the native path cannot read (a missing column, a type error), goes to GX. "gx": always
    GX. Default: BOSUN_EXPECTATIONS_ENGINE, else "native"."""
    engine = engine or os.environ.get("BOSUN_EXPECTATIONS_ENGINE", "native")
    if engine == "native":
        from orchestration.verification import native_expectations

        started = time.perf_counter()
        raw = _raw_suite(suite_path)
        try:
            rows = native_expectations.validate(frame, raw["expectations"], PARTIAL_UNEXPECTED)
        except native_expectations.NotNative:
            rows = None
        if rows is not None:
            return {
                "suite": raw["name"],
                "success": all(r["success"] for r in rows),
                "rows": len(frame),
                "results": [{k: _plain(v) if k == "unexpected_values" else v for k, v in r.items()} for r in rows],
                "seconds": round(time.perf_counter() - started, 4),
                "setup_seconds": 0.0,
                "engine": "native",
            }
    return _validate_gx(frame, suite_path)


def _raw_suite(path: str | Path) -> dict:
    """A suite file's JSON, read once per process (and again when it changes)."""
    path = Path(path)
    stamp = path.stat().st_mtime_ns
    cached = _state.setdefault("raw_suites", {}).get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    raw = json.loads(path.read_text())
    _state["raw_suites"][str(path)] = (stamp, raw)
    return raw


def _validate_gx(frame, suite_path: str | Path) -> dict:
    started = time.perf_counter()
    _, batch_definition = _context()
    suite = load_suite(suite_path)
    # The first validation in a process imports GX (seconds); later ones do not.
    setup, started = time.perf_counter() - started, time.perf_counter()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}
    )
    rows = []
    for r in result.results:
        res = r.result or {}
        severity = getattr(r.expectation_config, "severity", None)
        row = {
            "expectation": _name(r.expectation_config),
            "success": bool(r.success),
            "severity": getattr(severity, "value", str(severity or "critical")),
        }
        for key in ("observed_value", "element_count", "unexpected_count", "unexpected_percent"):
            if key in res:
                row[key] = _plain(res[key])
        if res.get("partial_unexpected_list"):
            row["unexpected_values"] = _plain(res["partial_unexpected_list"][:PARTIAL_UNEXPECTED])
        if r.exception_info and r.exception_info.get("raised_exception"):
            row["error"] = str(r.exception_info.get("exception_message"))[:300]
        rows.append(row)
    return {
        "suite": suite.name,
        "success": bool(result.success),
        "rows": len(frame),
        "results": rows,
        "seconds": round(time.perf_counter() - started, 4),
        "setup_seconds": round(setup, 4),
        "engine": "gx",
    }


def check_result(
    frame, suite_path: str | Path, check_name: str, asset_key: dg.AssetKey | None = None
) -> dg.AssetCheckResult:
    """The suite's verdict on the frame as an asset check result; every expectation's
    details are its metadata, the failing ones named. A failed `critical` expectation (GX's
    default severity) fails the check as ERROR, which stops a blocking check's run; when
    only `warning`/`info` expectations failed it is a WARN, which never blocks."""
    v = validate(frame, suite_path)
    failed = [r["expectation"] for r in v["results"] if not r["success"]]
    critical = any(r["severity"] == "critical" for r in v["results"] if not r["success"])
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=v["success"],
        severity=dg.AssetCheckSeverity.ERROR if critical or not failed else dg.AssetCheckSeverity.WARN,
        description=None
        if v["success"]
        else f"{len(failed)} expectation(s) of {v['suite']} failed: " + ", ".join(failed[:5]),
        metadata={
            "suite": v["suite"],
            "rows": v["rows"],
            "expectations": len(v["results"]),
            "failed_expectations": dg.MetadataValue.json(failed),
            "results": dg.MetadataValue.json(v["results"]),
            "validation_seconds": v["seconds"],
            "setup_seconds": v["setup_seconds"],
            "engine": v["engine"],
        },
    )


@dataclass(frozen=True)
class BatchSuites:
    """A workflow's expectation suites on its batch: the context frame, from the context
    asset's records, and the outcome frame, from the decisions, the events' end states, the
    events with a saga in the log and what the workflow's targets hold
    (`outcomes_frame(decisions, states, sagas, resources)`; `resource_keys`: the targets)."""

    context_suite: Path
    context_frame: Callable[[list[dict]], Any]
    outcomes_suite: Path
    outcomes_frame: Callable[[list[dict], Mapping[str, str], set, Mapping[str, Any]], Any]
    resource_keys: Collection[str] = ()
    effects: str = "effects in the targets"  # what the outcome frame reads of them, for the description


def build_expectation_checks(
    prefix: str, event_types: Sequence[str], partitions_def: dg.PartitionsDefinition, suites: BatchSuites
) -> list[dg.AssetChecksDefinition]:
    """`context_meets_expectations` on `<prefix>_context` and `outcomes_meet_expectations` on
    `<prefix>_actions`. Blocking: a batch whose context breaks its expectations is not decided
    on (its events stay received, nothing is lost, the check's metadata says which expectation
    and which values)."""
    context_key, actions_key = dg.AssetKey(f"{prefix}_context"), dg.AssetKey(f"{prefix}_actions")

    @dg.asset_check(
        asset=context_key,
        name="context_meets_expectations",
        blocking=True,
        partitions_def=partitions_def,
        description=f"The batch's context frame meets the {suites.context_suite.stem} expectation suite "
        "(Great Expectations).",
    )
    def context_meets_expectations(records: list[dict]) -> dg.AssetCheckResult:
        return check_result(
            suites.context_frame(records), suites.context_suite, "context_meets_expectations", context_key
        )

    @dg.asset_check(
        asset=actions_key,
        name="outcomes_meet_expectations",
        blocking=True,
        partitions_def=partitions_def,
        additional_ins={"decisions": dg.AssetIn(f"{prefix}_decisions")},
        required_resource_keys={"bosun_db", *suites.resource_keys},
        description=f"The batch's outcome frame (decisions, end states, {suites.effects}) meets the "
        f"{suites.outcomes_suite.stem} expectation suite (Great Expectations).",
    )
    # `context` unannotated: under `from __future__ import annotations` Dagster refuses its (string) type.
    def outcomes_meet_expectations(context, decisions: list[dict]):
        bosun_db = context.resources.bosun_db
        states = bosun_db.inbox().batch_statuses(context.partition_key, event_types)
        sagas = set(SagaLog(bosun_db.resolved_url).load([d["key"] for d in decisions]))
        resources = {k: getattr(context.resources, k) for k in suites.resource_keys}
        frame = suites.outcomes_frame(decisions, states, sagas, resources)
        return check_result(frame, suites.outcomes_suite, "outcomes_meet_expectations", actions_key)

    return [context_meets_expectations, outcomes_meet_expectations]
