"""Per-batch metrics: computed once per batch run, shown as asset metadata, kept in a table.

A batch run computes its figures from the events it brought to a terminal state and the
decisions behind them (`compute`). They go two ways:

- as numeric materialization metadata (`BatchMetrics.metadata()`), so the Dagster UI plots
  each figure over the batches;
- as one row per run in `bosun_batch_metrics` (`MetricsStore.record`), which the Prometheus
  collector (orchestration/prometheus.py) sums on every scrape. Counts and histogram
  bucket counts add up across rows; percentiles would not, which is why the table keeps
  buckets and the metadata keeps percentiles.

The row is keyed by run id: an event is counted by the run that moved it to its terminal
state, so a batch finished over two runs (a saga deferred, a crash) is counted once.

Latency is measured from `received_at` (Bosun's clock, when the inbox stored the event) to
the outcome (the inbox row's `updated_at` when its terminal state was written). The
source's `occurred_at` is not used: it is another system's clock and replays of old events
would swamp the figure with their age.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable

import numpy as np
import sqlalchemy as sa

from orchestration import clock
from orchestration.db import UtcDateTime, dialect_insert, engine_for, inbox

metrics_metadata = sa.MetaData()

batch_metrics = sa.Table(
    "bosun_batch_metrics",
    metrics_metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(100), nullable=False, index=True),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float),  # run start to its last outcome
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    # {"outcomes": {status: n}, "decisions": {"decision|route": n}, "guardrails": {name: n},
    #  "models": {model: n}}
    sa.Column("counts", sa.JSON, nullable=False),
    # {"confidence": {"counts": [...], "sum": x}, "latency_s": {...}}: per bucket, not cumulative
    sa.Column("histograms", sa.JSON, nullable=False),
)

# Upper bounds (le) of the histogram buckets; the last bucket (+Inf) is implicit.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
HISTOGRAM_BUCKETS = {"confidence": CONFIDENCE_BUCKETS, "latency_s": LATENCY_BUCKETS_S}

SUCCESS, FAILURE, ESCALATION = "done", "dead_lettered", "escalated"


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive; they were written in UTC.
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def bucket_counts(values: Iterable[float], bounds: tuple) -> list[int]:
    """Per bucket (value <= bound, first match), plus the +Inf bucket last."""
    arr = np.asarray(list(values), dtype=float)
    idx = np.searchsorted(np.asarray(bounds, dtype=float), arr, side="left")
    return np.bincount(idx, minlength=len(bounds) + 1).astype(int).tolist()


def percentiles(values: list[float], qs: tuple[int, ...]) -> dict[int, float]:
    if not values:
        return {}
    arr = np.percentile(np.asarray(values, dtype=float), qs)
    return {q: float(v) for q, v in zip(qs, arr)}


@dataclass
class BatchMetrics:
    workflow: str
    batch_id: str
    run_id: str
    events: int
    seconds: float | None
    outcomes: dict[str, int]
    decisions: dict[str, int]
    guardrails: dict[str, int]
    models: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latencies_s: list[float] = field(repr=False)
    confidences: list[float] = field(repr=False)

    def histograms(self) -> dict:
        return {
            "confidence": {
                "counts": bucket_counts(self.confidences, CONFIDENCE_BUCKETS),
                "sum": float(sum(self.confidences)),
            },
            "latency_s": {
                "counts": bucket_counts(self.latencies_s, LATENCY_BUCKETS_S),
                "sum": float(sum(self.latencies_s)),
            },
        }

    def metadata(self) -> dict[str, float | int]:
        """Flat numeric figures: each key is one line the Dagster UI can plot over batches.
        Rates and percentiles are left out of a run that finished no event (nothing to
        measure), rather than plotted as zeros."""
        md: dict[str, float | int] = {"metrics.events": self.events}
        n = self.events
        if n:
            if self.seconds:
                md["metrics.throughput_events_per_s"] = round(n / self.seconds, 3)
                md["metrics.run_seconds"] = round(self.seconds, 3)
            for q, v in percentiles(self.latencies_s, (50, 95, 99)).items():
                md[f"metrics.latency_received_to_outcome_p{q}_s"] = round(v, 3)
            md["metrics.success_rate"] = round(self.outcomes.get(SUCCESS, 0) / n, 4)
            md["metrics.failure_rate"] = round(self.outcomes.get(FAILURE, 0) / n, 4)
            md["metrics.escalation_rate"] = round(self.outcomes.get(ESCALATION, 0) / n, 4)
            for q, v in percentiles(self.confidences, (10, 50, 90)).items():
                md[f"metrics.confidence_p{q}"] = round(v, 4)
        for status, count in sorted(self.outcomes.items()):
            md[f"metrics.outcome.{status}"] = count
        for name, count in sorted(self.guardrails.items()):
            md[f"metrics.guardrail.{name}.activations"] = count
        md["metrics.input_tokens"] = self.input_tokens
        md["metrics.output_tokens"] = self.output_tokens
        md["metrics.cost_usd"] = round(self.cost_usd, 6)
        return md


def compute(
    workflow: str,
    batch_id: str,
    run_id: str,
    run_started_at: datetime | None,
    events: list[dict],
    decisions: list[dict],
    guardrail_names: Iterable[str] = (),
) -> BatchMetrics:
    """events: the run's events that reached a terminal state, each with `status`,
    `received_at` and `outcome_at`. decisions: the decisions behind those events, each with
    `decision`, `route`, `confidence`, `guardrails` (names that fired), `model`,
    `input_tokens`, `output_tokens`, `cost_usd`. Every guardrail in `guardrail_names` gets a
    figure, zero included, so each plot has a point per batch."""
    outcomes: dict[str, int] = {}
    latencies = []
    last_outcome = None
    for e in events:
        outcomes[e["status"]] = outcomes.get(e["status"], 0) + 1
        received, done = _aware(e.get("received_at")), _aware(e.get("outcome_at"))
        if received and done:
            latencies.append(max(0.0, (done - received).total_seconds()))
            last_outcome = done if last_outcome is None or done > last_outcome else last_outcome
    guardrails = {name: 0 for name in guardrail_names}
    by_decision: dict[str, int] = {}
    models: dict[str, int] = {}
    for d in decisions:
        label = f"{d['decision']}|{d['route']}"
        by_decision[label] = by_decision.get(label, 0) + 1
        models[d["model"]] = models.get(d["model"], 0) + 1
        for name in d["guardrails"]:
            guardrails[name] = guardrails.get(name, 0) + 1
    started = _aware(run_started_at)
    seconds = (last_outcome - started).total_seconds() if started and last_outcome else None
    return BatchMetrics(
        workflow=workflow,
        batch_id=batch_id,
        run_id=run_id,
        events=len(events),
        seconds=seconds if seconds and seconds > 0 else None,
        outcomes=outcomes,
        decisions=by_decision,
        guardrails=guardrails,
        models=models,
        input_tokens=int(sum(d["input_tokens"] for d in decisions)),
        output_tokens=int(sum(d["output_tokens"] for d in decisions)),
        cost_usd=float(sum(d["cost_usd"] for d in decisions)),
        latencies_s=latencies,
        confidences=[float(d["confidence"]) for d in decisions],
    )


class MetricsStore:
    def __init__(self, url: str):
        self.engine = engine_for(url)

    def event_times(self, keys: list[str]) -> dict[str, dict]:
        """status, received_at and outcome_at (the row's last update) per idempotency key."""
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                q = sa.select(inbox.c.idempotency_key, inbox.c.status, inbox.c.received_at, inbox.c.updated_at).where(
                    inbox.c.idempotency_key.in_(keys[i : i + 500])
                )
                for k, status, received, updated in conn.execute(q):
                    out[k] = {"status": status, "received_at": _aware(received), "outcome_at": _aware(updated)}
        return out

    def record(self, m: BatchMetrics) -> None:
        """One row per run; a step retried inside the same run replaces its row."""
        row = {
            "run_id": m.run_id,
            "workflow": m.workflow,
            "batch_id": m.batch_id,
            "recorded_at": clock.now(),
            "events": m.events,
            "seconds": m.seconds,
            "input_tokens": m.input_tokens,
            "output_tokens": m.output_tokens,
            "cost_usd": m.cost_usd,
            "counts": {
                "outcomes": m.outcomes,
                "decisions": m.decisions,
                "guardrails": m.guardrails,
                "models": m.models,
            },
            "histograms": m.histograms(),
        }
        stmt = dialect_insert(self.engine, batch_metrics).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"], set_={k: stmt.excluded[k] for k in row if k != "run_id"}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def totals(self) -> dict[str, dict]:
        """Per workflow, every row added up: counts, tokens, cost, histogram buckets."""
        cols = (
            batch_metrics.c.workflow,
            batch_metrics.c.events,
            batch_metrics.c.input_tokens,
            batch_metrics.c.output_tokens,
            batch_metrics.c.cost_usd,
            batch_metrics.c.counts,
            batch_metrics.c.histograms,
            batch_metrics.c.recorded_at,
        )
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for wf, events, tin, tout, cost, counts, hists, at in conn.execute(sa.select(*cols)):
                t = out.setdefault(
                    wf,
                    {
                        "batch_runs": 0,
                        "events": 0,
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "cost_usd": 0.0,
                        "outcomes": {},
                        "decisions": {},
                        "guardrails": {},
                        "models": {},
                        "last_recorded_at": None,
                        "histograms": {
                            name: {"counts": [0] * (len(b) + 1), "sum": 0.0} for name, b in HISTOGRAM_BUCKETS.items()
                        },
                    },
                )
                t["batch_runs"] += 1
                t["events"] += int(events)
                t["input_tokens"] += int(tin)
                t["output_tokens"] += int(tout)
                t["cost_usd"] += float(cost)
                for part in ("outcomes", "decisions", "guardrails", "models"):
                    for k, n in (counts or {}).get(part, {}).items():
                        t[part][k] = t[part].get(k, 0) + int(n)
                for name, h in (hists or {}).items():
                    if name in t["histograms"] and len(h["counts"]) == len(t["histograms"][name]["counts"]):
                        acc = t["histograms"][name]
                        acc["counts"] = [a + int(b) for a, b in zip(acc["counts"], h["counts"])]
                        acc["sum"] += float(h["sum"])
                at = _aware(at)
                if t["last_recorded_at"] is None or at > t["last_recorded_at"]:
                    t["last_recorded_at"] = at
        return out
