"""Prometheus metrics read from Bosun's database on every scrape.

A custom collector rather than counters in process memory: events are ingested by the API,
decided by run workers and reviewed from the CLI, each its own process, so only the
database has the whole picture. Every scrape runs a handful of grouped queries (the inbox
counts are the same query as `bosun status --json`, so the two always agree) and sums the
per-run rows of `bosun_batch_metrics` (orchestration/verification/metrics.py).

Exposed by `bosun serve` at GET /metrics and by `bosun metrics --port` (cli_metrics.py).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from orchestration.action.saga_log import sagas
from orchestration.audit.chain import AuditLog
from orchestration.core.db import engine_for, review_queue
from orchestration.decision.llm_ledger import llm_spend
from orchestration.trigger.dead_letters import DeadLetters
from orchestration.trigger.inbox import Inbox
from orchestration.trigger.recovery import RECOVERY_KIND_PREFIX, RECOVERY_KINDS
from orchestration.verification.metrics import HISTOGRAM_BUCKETS, MetricsStore

PREFIX = "bosun"


def _histogram(name: str, doc: str, workflow: str, bounds: tuple, h: dict) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(f"{PREFIX}_{name}", doc, labels=["workflow"])
    cumulative, buckets = 0, []
    for bound, n in zip([*bounds, float("inf")], h["counts"]):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    fam.add_metric([workflow], buckets, sum_value=h["sum"])
    return fam


class BosunCollector(Collector):
    def __init__(self, url: str):
        self.url = url

    def collect(self):
        started = time.perf_counter()
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "1 if Bosun's database answered this scrape")
        try:
            families = list(self._families())
        except sa.exc.SQLAlchemyError:
            # A scrape must answer even when the database does not: say so, as a metric.
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily(f"{PREFIX}_scrape_duration_seconds", "time spent reading the database")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _families(self):
        inbox = Inbox(self.url)
        counts = inbox.counts()
        fam = GaugeMetricFamily(
            f"{PREFIX}_events", "inbox events by state (as `bosun status --json`)", labels=["status"]
        )
        for status, n in sorted(counts["by_status"].items()):
            fam.add_metric([status], n)
        yield fam
        fam = CounterMetricFamily(f"{PREFIX}_events_received", "events stored in the inbox, all states")
        fam.add_metric([], counts["received"])
        yield fam
        fam = CounterMetricFamily(f"{PREFIX}_duplicate_deliveries", "deliveries of an event already stored")
        fam.add_metric([], counts["duplicates"])
        yield fam

        engine = engine_for(self.url)
        with engine.connect() as conn:
            reviews = dict(
                conn.execute(sa.select(review_queue.c.status, sa.func.count()).group_by(review_queue.c.status)).all()
            )
            saga_states = conn.execute(
                sa.select(sagas.c.workflow, sagas.c.status, sa.func.count()).group_by(sagas.c.workflow, sagas.c.status)
            ).all()
            spend = conn.execute(
                sa.select(
                    llm_spend.c.workflow,
                    sa.func.sum(llm_spend.c.tokens),
                    sa.func.sum(llm_spend.c.cost),
                    sa.func.sum(llm_spend.c.calls),
                ).group_by(llm_spend.c.workflow)
            ).all()
        fam = GaugeMetricFamily(f"{PREFIX}_review_queue", "review queue items by status", labels=["status"])
        for status in sorted({"pending", *reviews}):
            fam.add_metric([status], int(reviews.get(status, 0)))
        yield fam
        fam = GaugeMetricFamily(f"{PREFIX}_review_queue_pending", "decisions waiting for a person")
        fam.add_metric([], int(reviews.get("pending", 0)))
        yield fam

        stats = DeadLetters(self.url).stats()
        fam = GaugeMetricFamily(f"{PREFIX}_dead_letters_open", "dead letters not yet retried or dropped")
        fam.add_metric([], stats.open)
        yield fam
        fam = GaugeMetricFamily(
            f"{PREFIX}_dead_letters_oldest_open_age_seconds", "age of the oldest open dead letter (0 when none)"
        )
        fam.add_metric([], stats.oldest_open_age_s or 0.0)
        yield fam

        fam = GaugeMetricFamily(f"{PREFIX}_sagas", "sagas by workflow and state", labels=["workflow", "status"])
        for wf, status, n in saga_states:
            fam.add_metric([wf, status], int(n))
        yield fam

        tokens = CounterMetricFamily(
            f"{PREFIX}_llm_tokens", "LLM tokens spent (the budget ledger)", labels=["workflow"]
        )
        cost = CounterMetricFamily(f"{PREFIX}_llm_cost_usd", "LLM cost in USD (the budget ledger)", labels=["workflow"])
        calls = CounterMetricFamily(f"{PREFIX}_llm_calls", "LLM calls (the budget ledger)", labels=["workflow"])
        for wf, t, c, n in spend:
            tokens.add_metric([wf], int(t or 0))
            cost.add_metric([wf], float(c or 0))
            calls.add_metric([wf], int(n or 0))
        yield from (tokens, cost, calls)

        by_kind = AuditLog(self.url).count_by_kind()
        fam = CounterMetricFamily(f"{PREFIX}_audit_records", "audit log records by kind", labels=["kind"])
        for kind, n in sorted(by_kind.items()):
            fam.add_metric([kind], n)
        yield fam
        fam = CounterMetricFamily(
            f"{PREFIX}_recoveries",
            "recoveries without an operator (each an audit record): worker_lost, rerun, dead_letter",
            labels=["action"],
        )
        for kind in RECOVERY_KINDS:
            fam.add_metric([kind[len(RECOVERY_KIND_PREFIX) :]], int(by_kind.get(kind, 0)))
        yield fam

        yield from self._batch_families(MetricsStore(self.url).totals())

    def _batch_families(self, totals: dict):
        runs = CounterMetricFamily(f"{PREFIX}_batch_runs", "batch runs that recorded metrics", labels=["workflow"])
        outcomes = CounterMetricFamily(
            f"{PREFIX}_outcomes", "terminal states written by batch runs", labels=["workflow", "status"]
        )
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions", "decisions behind those outcomes", labels=["workflow", "decision", "route"]
        )
        models = CounterMetricFamily(
            f"{PREFIX}_decisions_by_model", "decisions per deciding model", labels=["workflow", "model"]
        )
        guards = CounterMetricFamily(
            f"{PREFIX}_guardrail_activations", "times a guardrail fired on a decision", labels=["workflow", "guardrail"]
        )
        tokens = CounterMetricFamily(
            f"{PREFIX}_decision_tokens", "model tokens spent on decisions", labels=["workflow", "direction"]
        )
        cost = CounterMetricFamily(f"{PREFIX}_decision_cost_usd", "model cost of decisions in USD", labels=["workflow"])
        last = GaugeMetricFamily(
            f"{PREFIX}_last_batch_timestamp_seconds", "when the last batch run recorded", labels=["workflow"]
        )
        hists = []
        for wf, t in sorted(totals.items()):
            runs.add_metric([wf], t["batch_runs"])
            for status, n in sorted(t["outcomes"].items()):
                outcomes.add_metric([wf, status], n)
            for label, n in sorted(t["decisions"].items()):
                decision, _, route = label.partition("|")
                decisions.add_metric([wf, decision, route], n)
            for model, n in sorted(t["models"].items()):
                models.add_metric([wf, model], n)
            for name, n in sorted(t["guardrails"].items()):
                guards.add_metric([wf, name], n)
            tokens.add_metric([wf, "input"], t["input_tokens"])
            tokens.add_metric([wf, "output"], t["output_tokens"])
            cost.add_metric([wf], t["cost_usd"])
            if t["last_recorded_at"]:
                last.add_metric([wf], t["last_recorded_at"].timestamp())
            hists.append(
                _histogram(
                    "decision_confidence",
                    "calibrated confidence of decisions",
                    wf,
                    HISTOGRAM_BUCKETS["confidence"],
                    t["histograms"]["confidence"],
                )
            )
            hists.append(
                _histogram(
                    "event_latency_seconds",
                    "received_at to outcome, per event",
                    wf,
                    HISTOGRAM_BUCKETS["latency_s"],
                    t["histograms"]["latency_s"],
                )
            )
        yield from (runs, outcomes, decisions, models, guards, tokens, cost, last)
        # One family per name: merge the workflows' samples.
        by_name: dict[str, HistogramMetricFamily] = {}
        for h in hists:
            if h.name in by_name:
                by_name[h.name].samples.extend(h.samples)
            else:
                by_name[h.name] = h
        yield from by_name.values()


def registry_for(url: str) -> CollectorRegistry:
    """A registry of its own (not the process-global one), so several apps or tests can
    each have one without duplicate-registration errors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BosunCollector(url))
    return registry


def exposition(url: str) -> bytes:
    return generate_latest(registry_for(url))
