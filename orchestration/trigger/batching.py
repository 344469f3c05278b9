"""Cutting the inbox into batches, and naming a batch by its sequence range.

A batch is named first..last rather than by its event ids so that a sensor tick stays
small (36 KB vs 726 KB per 100 batches, shared/notes/performance.md) and a batch can be
re-read, and re-run as a backfill of its partition, from its name alone.

Which events a batch processes is decided when its run starts: it claims the unclaimed
`received` events of its range (`Inbox.claim_batch`), so ranges may overlap (a sweep of
stragglers below the cursor, a backfill, a recovery) and still no event is processed by two
batches. The cursor never skips an event a writer has yet to commit (`inbox_fence.py`); the
sweep is the safety net for rows written around the fence (before it existed, say).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from orchestration.trigger.inbox import Inbox


@dataclass(frozen=True)
class BatchRange:
    first: int
    last: int
    # The partition key the range was parsed from, kept as given: the claim stamps this string
    # on the batch's events, and the outcome writes the partition key, so both must agree.
    name: str | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return self.name or f"{self.first:012d}-{self.last:012d}"

    def overlaps(self, other: "BatchRange") -> bool:
        return self.first <= other.last and other.first <= self.last

    @classmethod
    def parse(cls, key: str) -> "BatchRange":
        try:
            first, last = (int(p) for p in key.split("-"))
        except ValueError:
            raise ValueError(f"not a batch key (expected FIRST-LAST sequence numbers): {key!r}") from None
        if first > last:
            raise ValueError(f"batch key runs backwards: {key!r}")
        return cls(first, last, key)


@dataclass(frozen=True)
class BatchPolicy:
    max_events: int = 1000  # a run per batch: larger batches amortise Dagster's ~0.25-5 s per run
    max_wait_seconds: float = 5.0  # a partial batch is cut once its oldest event waited this long
    max_batches_per_tick: int = 20  # keeps RunRequests per tick to a few dozen
    min_events: int = 100  # batch size grows from this towards max_events with the backlog
    max_in_flight: int = 4  # batch runs queued or running at once; the sensor waits beyond
    # An unclaimed `received` event below the cursor this old belongs to no batch: it is swept
    # into a batch of its own. Well above max_wait_seconds plus the time a requested run takes
    # to be created, so a batch just requested is never raced (its claim would win anyway).
    sweep_after_seconds: float = 60.0

    def __post_init__(self) -> None:
        counts = ("max_events", "max_batches_per_tick", "min_events", "max_in_flight")
        if bad := [f"{n}={getattr(self, n)!r}" for n in counts if getattr(self, n) < 1]:
            raise ValueError(f"a batch policy's counts are at least 1: {', '.join(bad)}")
        if bad := [
            f"{n}={getattr(self, n)!r}" for n in ("max_wait_seconds", "sweep_after_seconds") if getattr(self, n) < 0
        ]:
            raise ValueError(f"a batch policy's waits are not negative: {', '.join(bad)}")


def env_batch_policy(workflow: str, policy: BatchPolicy, environ: Mapping[str, str] = os.environ) -> BatchPolicy:
    """The workflow's declared batch policy with the deployment's overrides, read when the code
    location loads: `BOSUN_<WORKFLOW>_BATCH_POLICY`, a JSON object of `BatchPolicy` fields, e.g.
    `{"max_events": 2500}`. Batch size is where throughput and memory meet: a run worker holds
    its batch in memory (measured per workflow by benchmarks/daemon_path.py, deploy/README.md),
    so a smaller machine takes smaller batches and a larger one more in flight, without a code
    change. A malformed value stops the load with its reason."""
    name = f"BOSUN_{workflow.upper()}_BATCH_POLICY"
    raw = environ.get(name, "").strip()
    if not raw:
        return policy
    import pydantic

    known = {f.name for f in fields(BatchPolicy)}
    try:
        overrides = json.loads(raw)  # operator configuration, not model output
        if not isinstance(overrides, dict):
            raise ValueError(f"expected a JSON object of {', '.join(sorted(known))}")
        if unknown := sorted(set(overrides) - known):
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return pydantic.TypeAdapter(BatchPolicy).validate_python({**asdict(policy), **overrides}, strict=False)
    except (ValueError, pydantic.ValidationError) as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from None


def adaptive_size(backlog: int, policy: BatchPolicy, slots: int | None = None) -> int:
    """Small batches when little waits (low latency), large ones under a backlog (throughput):
    the backlog spread over the run slots free now (default: all the runs allowed in flight),
    clamped to [min_events, max_events]. Spread over the free slots, not over all of them:
    with runs in flight and one slot free, the rest of a backlog goes as one batch, not as a
    tail of ever smaller ones, each paying a run process's start (seconds) for a few events."""
    lo = min(policy.min_events, policy.max_events)
    slots = policy.max_in_flight if slots is None else min(slots, policy.max_in_flight)
    return max(lo, min(policy.max_events, -(-backlog // max(slots, 1))))


def cut_batches(
    pending: list[tuple[int, datetime]],
    policy: BatchPolicy,
    now: datetime,
    size: int | None = None,
    limit: int | None = None,
) -> list[BatchRange]:
    """Full batches of `size` (default max_events), at most `limit` (default max_batches_per_tick);
    then the remainder only if its oldest event waited long enough."""
    size = size or policy.max_events
    limit = policy.max_batches_per_tick if limit is None else limit
    batches: list[BatchRange] = []
    i = 0
    while i < len(pending) and len(batches) < limit:
        chunk = pending[i : i + size]
        full = len(chunk) == size
        waited = now - chunk[0][1] >= timedelta(seconds=policy.max_wait_seconds)
        if not (full or waited):
            break
        batches.append(BatchRange(chunk[0][0], chunk[-1][0]))
        i += len(chunk)
    return batches


def sweep_batches(stragglers: Sequence[int], busy: Sequence[BatchRange], size: int, limit: int) -> list[BatchRange]:
    """Batches of stragglers (unclaimed events below the cursor, in seq order), at most `size`
    each and `limit` in all; none reaches into a busy range (a batch whose run is queued,
    running or just ended), whose own claim is due or just happened."""
    if limit <= 0:
        return []
    out: list[tuple[int, int, int]] = []  # first, last, count
    for seq in stragglers:
        if any(b.first <= seq <= b.last for b in busy):
            continue
        if out:
            first, _, n = out[-1]
            grown = BatchRange(first, seq)
            if n < size and not any(grown.overlaps(b) for b in busy):
                out[-1] = (first, seq, n + 1)
                continue
            if len(out) == limit:
                break
        out.append((seq, seq, 1))
    return [BatchRange(f, last) for f, last, _ in out]


@dataclass(frozen=True)
class BatchPlan:
    """What one sensor tick (or one loop of the in-process runner) requests."""

    batches: list[BatchRange]  # cut past the cursor, in order
    sweeps: list[BatchRange]  # stragglers below the cursor that no batch claimed
    cursor: int  # the last seq batched: the next plan reads past it
    pending: list[tuple[int, datetime]]
    stragglers: list[int]
    backlog: int
    size: int

    def events_in(self, batch: BatchRange) -> int:
        seqs = [s for s, _ in self.pending] if batch in self.batches else self.stragglers
        return sum(1 for s in seqs if batch.first <= s <= batch.last)


def plan_batches(
    inbox: "Inbox",
    cursor: int,
    event_types: Sequence[str],
    policy: BatchPolicy,
    now: datetime,
    slots: int,
    busy: Callable[[], Sequence[BatchRange]],
    size: int | None = None,
) -> BatchPlan:
    """The sweep first (one batch at most per plan: stragglers are rare), then batches past the
    cursor in the slots left, of `size` events (default: adapted to the backlog). `busy` is
    asked only when there are stragglers. Raises `WritersInFlight` when the commit fence could
    not be crossed in time."""
    types = list(event_types)
    stragglers = inbox.unbatched_below(
        cursor, types, now - timedelta(seconds=policy.sweep_after_seconds), policy.max_events
    )
    sweeps = sweep_batches(stragglers, busy(), policy.max_events, min(1, slots)) if stragglers else []
    slots -= len(sweeps)
    backlog = inbox.backlog_after(cursor, types, policy.max_events * policy.max_in_flight)
    size = size or adaptive_size(backlog, policy, slots)
    pending = inbox.pending_after(cursor, types, size * slots) if slots > 0 else []
    batches = cut_batches(pending, policy, now, size=size, limit=slots) if slots > 0 else []
    return BatchPlan(batches, sweeps, batches[-1].last if batches else cursor, pending, stragglers, backlog, size)
