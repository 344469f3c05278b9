"""The invoice batch's metrics: what orchestration/metrics.py needs, from this workflow's records."""

import time
from datetime import datetime, timezone

import dagster as dg

from orchestration import metrics
from orchestration.metrics import BatchMetrics, MetricsStore

from assets.invoices.workflow import WORKFLOW


def _decision_record(d: dict) -> dict:
    g = d["guardrails"]
    return {"decision": d["final_decision"], "route": d["route"], "confidence": d["confidence"],
            "guardrails": g["blocked_by"] + g["flagged_by"], "model": d["model"],
            "input_tokens": d["input_tokens"], "output_tokens": d["output_tokens"], "cost_usd": d["cost_usd"]}


def run_started_at(context: dg.OpExecutionContext) -> datetime | None:
    record = context.instance.get_run_record_by_id(context.run_id)
    start = record.start_time if record else None
    return datetime.fromtimestamp(start, timezone.utc) if start else None


def batch_metrics(decisions: list[dict], states: list[dict], store: MetricsStore, batch_id: str, run_id: str,
                  started_at: datetime | None) -> tuple[BatchMetrics, dict]:
    """The figures for the events this run brought to a terminal state (a deferred saga's
    event is counted by the run that finishes it), recorded for Prometheus, and the
    metadata for the UI (with what computing them cost, so the overhead stays visible)."""
    from assets.invoices.decisions import invoice_policy

    t0 = time.perf_counter()
    finished = {s["key"] for s in states}
    times = store.event_times(sorted(finished))
    events = [{"status": s["status"], **{k: v for k, v in times.get(s["key"], {}).items() if k != "status"}}
              for s in states]
    m = metrics.compute(WORKFLOW, batch_id, run_id, started_at, events,
                        [_decision_record(d) for d in decisions if d["key"] in finished],
                        invoice_policy().rule_names())
    store.record(m)
    return m, {**m.metadata(), "metrics.overhead_s": round(time.perf_counter() - t0, 4)}
