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
    min_events: int = 100          # batch size grows from this towards max_events with the backlog
    max_in_flight: int = 4         # batch runs queued or running at once; the sensor waits beyond


def adaptive_size(backlog: int, policy: BatchPolicy) -> int:
    """Small batches when little waits (low latency), large ones under a backlog (throughput):
    the backlog spread over the runs allowed in flight, clamped to [min_events, max_events]."""
    lo = min(policy.min_events, policy.max_events)
    return max(lo, min(policy.max_events, -(-backlog // max(policy.max_in_flight, 1))))


def cut_batches(pending: list[tuple[int, datetime]], policy: BatchPolicy, now: datetime,
                size: int | None = None, limit: int | None = None) -> list[BatchRange]:
    """Full batches of `size` (default max_events), at most `limit` (default max_batches_per_tick);
    then the remainder only if its oldest event waited long enough."""
    size = size or policy.max_events
    limit = policy.max_batches_per_tick if limit is None else limit
    batches: list[BatchRange] = []
    i = 0
    while i < len(pending) and len(batches) < limit:
        chunk = pending[i:i + size]
        full = len(chunk) == size
        waited = now - chunk[0][1] >= timedelta(seconds=policy.max_wait_seconds)
        if not (full or waited):
            break
        batches.append(BatchRange(chunk[0][0], chunk[-1][0]))
        i += len(chunk)
    return batches
