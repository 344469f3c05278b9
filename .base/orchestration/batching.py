"""Cutting the inbox into batches, and naming a batch by its sequence range.

A batch is named first..last rather than by its event ids so that a sensor tick stays
small (36 KB vs 726 KB per 100 batches, shared/notes/performance.md) and a batch can be
re-read, and re-run as a backfill of its partition, from its name alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BatchRange:
    first: int
    last: int

    @property
    def key(self) -> str:
        return f"{self.first:012d}-{self.last:012d}"

    @classmethod
    def parse(cls, key: str) -> "BatchRange":
        try:
            first, last = (int(p) for p in key.split("-"))
        except ValueError:
            raise ValueError(f"not a batch key (expected FIRST-LAST sequence numbers): {key!r}") from None
        if first > last:
            raise ValueError(f"batch key runs backwards: {key!r}")
        return cls(first, last)


@dataclass(frozen=True)
class BatchPolicy:
    max_events: int = 1000        # a run per batch: larger batches amortise Dagster's ~0.25-5 s per run
    max_wait_seconds: float = 5.0  # a partial batch is cut once its oldest event waited this long
    max_batches_per_tick: int = 20  # keeps RunRequests per tick to a few dozen


def cut_batches(pending: list[tuple[int, datetime]], policy: BatchPolicy, now: datetime) -> list[BatchRange]:
    """Full batches of `max_events`; then the remainder only if its oldest event waited long enough."""
    batches: list[BatchRange] = []
    i = 0
    while i < len(pending) and len(batches) < policy.max_batches_per_tick:
        chunk = pending[i:i + policy.max_events]
        full = len(chunk) == policy.max_events
        waited = now - chunk[0][1] >= timedelta(seconds=policy.max_wait_seconds)
        if not (full or waited):
            break
        batches.append(BatchRange(chunk[0][0], chunk[-1][0]))
        i += len(chunk)
    return batches
