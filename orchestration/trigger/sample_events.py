"""A workflow's sample events outside a live source: read from a JSONL file, shaped as the
inbox returns them (training and calibration decide a labelled sample without storing it in
an inbox), and fed to the inbox a chunk at a time (`bosun dev`'s living feed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from orchestration.trigger.envelope import PayloadRegistry, parse_envelope
from orchestration.trigger.inbox import Inbox, InboxEvent


def read_events(path: str | Path) -> list[dict]:
    """The events of a JSONL file, one per non-empty line."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def as_inbox_events(raw_events: Iterable[Any], registry: PayloadRegistry) -> list[InboxEvent]:
    """Distinct events (a re-delivery is the same event) shaped as the inbox returns them,
    each validated and upcast as the inbox would."""
    seen, events = set(), []
    for i, raw in enumerate(raw_events):
        env = parse_envelope(raw, registry)
        if env.idempotency_key in seen:
            continue
        seen.add(env.idempotency_key)
        events.append(InboxEvent(seq=i + 1, key=env.idempotency_key, envelope=env, status="received", attempts=0))
    return events


def ingest_chunk(inbox: Inbox, events: list[dict], registry: PayloadRegistry, chunk: int) -> dict:
    """A chunk of the living feed into the inbox; what `bosun dev` prints of it."""
    summary = inbox.ingest(events, registry)
    return {
        "chunk": chunk,
        "accepted": summary.accepted,
        "duplicates": summary.duplicates,
        "rejected": len(summary.rejected),
    }
