"""Per-batch metrics: computed once per batch run, shown as asset metadata, kept in a table.

A batch run computes its figures from the events it brought to a terminal state and the
decisions behind them (`compute`). They go two ways:

- as materialization metadata (`BatchMetrics.metadata()`): a small ordered set of numeric
  series the Dagster UI plots over the batches (`SERIES`), and every other figure in one JSON
  entry (`DETAILS`);
- as one row per run in `bosun_batch_metrics` (`MetricsStore.record`), which the Prometheus
  collector (orchestration/verification/prometheus.py) sums on every scrape. Counts and histogram
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

import sqlalchemy as sa

from orchestration.core import clock
from orchestration.core.db import UtcDateTime, dialect_insert, engine_for, inbox

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
# The router's name for the local model (orchestration/decision/routing.py); any other model is an LLM.
LOCAL_MODEL = "local"

# The series the Dagster UI plots for every batch (Overview -> Metadata -> Plots). The UI
# plots every numeric entry, sorted as plain strings, so each name starts with a two-digit
# position: the headline figures come first, in this order, ahead of any unprefixed entry,
# and "10_" cannot sort before "2_". Everything else is in the JSON entry `DETAILS`, which
# the UI shows in the table and does not plot.
EVENTS = "01_events"
THROUGHPUT = "02_throughput_events_per_s"
LATENCY_P50 = "03_latency_p50_s"
LATENCY_P95 = "04_latency_p95_s"
SUCCESS_RATE = "05_success_rate"
ESCALATION_RATE = "06_escalation_rate"
DEAD_LETTER_RATE = "07_dead_letter_rate"
CONFIDENCE_MIN = "08_confidence_min"
CONFIDENCE_P05 = "09_confidence_p05"
CONFIDENCE_P50 = "10_confidence_p50"
LLM_SHARE = "11_llm_share"
LLM_COST = "12_llm_cost_usd"
GUARDRAIL = "13_guardrail."  # + the guardrail's name, one series each
SERIES = (
    EVENTS,
    THROUGHPUT,
    LATENCY_P50,
    LATENCY_P95,
    SUCCESS_RATE,
    ESCALATION_RATE,
    DEAD_LETTER_RATE,
    CONFIDENCE_MIN,
    CONFIDENCE_P05,
    CONFIDENCE_P50,
    LLM_SHARE,
    LLM_COST,
)
DETAILS = "details"


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive; they were written in UTC.
    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def bucket_counts(values: Iterable[float], bounds: tuple) -> list[int]:
    """Per bucket (value <= bound, first match), plus the +Inf bucket last."""
    # imported when used: the code location loads without numpy (code server RSS, run start)
    import numpy as np

    arr = np.asarray(list(values), dtype=float)
    idx = np.searchsorted(np.asarray(bounds, dtype=float), arr, side="left")
    return np.bincount(idx, minlength=len(bounds) + 1).astype(int).tolist()


def percentiles(values: list[float], qs: tuple[int, ...]) -> dict[int, float]:
    if not values:
        return {}
    import numpy as np

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
    confidences: list[float] = field(repr=False)  # every decision's (the Prometheus histogram)
    # The confidences routing compared with the thresholds: every decision but those a hard
    # rule escalated outright, whose confidence (the rule's, 1.0) decided nothing.
    routed_confidences: list[float] = field(default_factory=list, repr=False)

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

    def series(self, llm: bool = True) -> dict[str, float | int]:
        """The plotted figures, in `SERIES` order. A figure is left out where it would only
        ever be a flat zero or has nothing to measure: rates and percentiles in a run that
        finished no event, the LLM's share and cost where no LLM is configured (`llm`), a
        guardrail in a batch where it did not fire (its zero is in the details)."""
        out: dict[str, float | int] = {EVENTS: self.events}
        n = self.events
        if n and self.seconds:
            out[THROUGHPUT] = round(n / self.seconds, 3)
        latency = percentiles(self.latencies_s, (50, 95))
        if latency:
            out[LATENCY_P50], out[LATENCY_P95] = round(latency[50], 3), round(latency[95], 3)
        if n:
            out[SUCCESS_RATE] = round(self.outcomes.get(SUCCESS, 0) / n, 4)
            out[ESCALATION_RATE] = round(self.outcomes.get(ESCALATION, 0) / n, 4)
            out[DEAD_LETTER_RATE] = round(self.outcomes.get(FAILURE, 0) / n, 4)
        # The low end is what matters: a few low-confidence escalations in a batch of a hundred
        # never reach a tenth percentile, but they are its minimum and move its 5th.
        confidence = percentiles(self.routed_confidences, (0, 5, 50))
        if confidence:
            out[CONFIDENCE_MIN] = round(confidence[0], 4)
            out[CONFIDENCE_P05] = round(confidence[5], 4)
            out[CONFIDENCE_P50] = round(confidence[50], 4)
        decided = sum(self.models.values())
        if llm and decided:
            out[LLM_SHARE] = round(sum(c for m, c in self.models.items() if m != LOCAL_MODEL) / decided, 4)
            out[LLM_COST] = round(self.cost_usd, 6)
        for name, count in sorted(self.guardrails.items()):
            if count:
                out[GUARDRAIL + name] = count
        return out

    def details(self) -> dict:
        """Every figure that is not a series (or only a rarely non-zero one), as plain JSON."""
        latency = percentiles(self.latencies_s, (50, 95, 99))
        confidence = percentiles(self.routed_confidences, (10, 50, 90))
        return {
            "events": self.events,
            "run_seconds": round(self.seconds, 3) if self.seconds else None,
            "outcomes": dict(sorted(self.outcomes.items())),
            "latency_received_to_outcome_s": {f"p{q}": round(v, 3) for q, v in latency.items()},
            "decisions": dict(sorted(self.decisions.items())),
            "models": dict(sorted(self.models.items())),
            "confidence": {
                "routed": len(self.routed_confidences),
                "escalated_by_rule": len(self.confidences) - len(self.routed_confidences),
                **{f"p{q}": round(v, 4) for q, v in confidence.items()},
            },
            # Every guardrail of the policy, zeros included.
            "guardrail_activations": dict(sorted(self.guardrails.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }

    def metadata(self, llm: bool = True, details: dict | None = None) -> dict:
        """The series, then `DETAILS`: these figures and the caller's `details` (a plain dict;
        Dagster stores it as JSON metadata)."""
        return {**self.series(llm), DETAILS: {**self.details(), **(details or {})}}


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
    `input_tokens`, `output_tokens`, `cost_usd`, and `escalated_by_rule` (a hard rule sent it
    to a person whatever the confidence; False if missing). Every guardrail in
    `guardrail_names` gets a count, zero included."""
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
        routed_confidences=[float(d["confidence"]) for d in decisions if not d.get("escalated_by_rule")],
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
