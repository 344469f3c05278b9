"""The frames a workflow's expectation suites (expectations.py) are run on: one row per event
of a batch, from its context records or its decisions, with the columns every workflow has and
those the workflow declares (its own row function and column names). The columns are fixed,
so an empty batch still gives a frame the suite can name its columns in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Collection, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd


def context_quality(record: dict) -> float:
    """The context's quality: the product of (1 - penalty) over its quality factors."""
    quality = 1.0
    for f in record.get("quality_factors", []):
        quality *= 1 - f["penalty"]
    return quality


def context_frame(records: list[dict], own: Callable[[dict], dict], own_columns: Sequence[str]) -> pd.DataFrame:
    """One row per event of the batch: its key and event id, the workflow's columns, and the
    context's quality, its largest penalty, the document's tokens and the context hash."""
    rows = []
    for r in records:
        rows.append(
            {
                "key": r["key"],
                "event_id": r["event_id"],
                **own(r),
                "context_quality": context_quality(r),
                "max_penalty": max((f["penalty"] for f in r.get("quality_factors", [])), default=0.0),
                # Required items may exceed the budget by design; an empty document may not.
                "tokens": r.get("assembly", {}).get("tokens"),
                "context_hash": r.get("context_hash"),
            }
        )
    columns = ["key", "event_id", *own_columns, "context_quality", "max_penalty", "tokens", "context_hash"]
    # imported when used: the code location loads without pandas (code server RSS, run start)
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def outcome_frame(
    decisions: list[dict],
    states: Mapping[str, str],
    acting: str,
    own: Callable[[dict, str], dict],
    own_columns: Sequence[str],
    sagas: Collection[str] = frozenset(),
) -> pd.DataFrame:
    """One row per decision of the run: what was acted on, the decision recomputed, its route
    and confidence, where the event ended (`states`: key -> inbox status), and the workflow's
    columns (`own(decision, acted_on)`: what the target systems hold for it, say). `sagas`:
    the events with a saga in the log."""
    rows = []
    for d in decisions:
        # A saga already in the log was planned by an approval (`acting`) and is finished
        # whatever a re-run decides (actions.execute): after a crash mid-saga, the recomputed
        # decision may differ (the event's own effect now counts against its limits).
        acted_on = acting if d["key"] in sagas else d["final_decision"]
        rows.append(
            {
                "key": d["key"],
                "decision": acted_on,
                "recomputed_decision": d["final_decision"],
                "route": d["route"],
                "confidence": d["confidence"],
                "state": states.get(d["key"], "unknown"),
                **own(d, acted_on),
            }
        )
    columns = ["key", "decision", "recomputed_decision", "route", "confidence", "state", *own_columns]
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)
