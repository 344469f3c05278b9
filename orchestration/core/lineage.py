"""Asset groups named by workflow and layer, and the inbox as the lineage's first node.

The global lineage should read as the architecture: trigger -> context -> decision -> action
-> verification (plus the feedback loop that feeds the decision layer), one connected graph
per workflow. Every workflow names its groups through `layer_group`, so the UI's group list
sorts by workflow and then shows the layers.
"""

from __future__ import annotations

from typing import Literal, Sequence

import dagster as dg

Layer = Literal["trigger", "context", "decision", "action", "verification", "feedback"]
LAYERS: tuple[Layer, ...] = ("trigger", "context", "decision", "action", "verification", "feedback")


def layer_group(workflow: str, layer: Layer) -> str:
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; one of {', '.join(LAYERS)}")
    return f"{workflow}_{layer}"


def inbox_asset(key: str, workflow: str, event_types: Sequence[str]) -> dg.AssetSpec:
    """The workflow's inbox as an external asset: Bosun's inbox table, filled by `bosun ingest`
    and the HTTP API, observed by the inbox sensor each time it cuts batches."""
    return dg.AssetSpec(
        key,
        group_name=layer_group(workflow, "trigger"),
        kinds={"sql"},
        description=f"Incoming {', '.join(event_types)} events, deduplicated on arrival; the inbox "
        "sensor cuts them into batches (its observations carry the backlog at each cut).",
        metadata={"event_types": ", ".join(event_types)},
    )
