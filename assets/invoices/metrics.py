"""The invoice batch's metrics and traces: what orchestration/verification/metrics.py and
orchestration/verification/tracing.py need, from this workflow's records and its run's steps."""

import time
from datetime import datetime, timezone

import dagster as dg

from assets.invoices.workflow import WORKFLOW
from orchestration.core import clock
from orchestration.verification import metrics, tracing
from orchestration.verification.metrics import BatchMetrics, MetricsStore

# Which steps of the batch run carry which layer (step keys of the graph-backed assets).
LAYER_STEPS = {"context": "invoice_context", "decision": "invoice_decisions", "action": "invoice_actions"}


def _decision_record(d: dict) -> dict:
    g = d["guardrails"]
    return {
        "decision": d["final_decision"],
        "route": d["route"],
        "confidence": d["confidence"],
        "guardrails": g["blocked_by"] + g["flagged_by"],
        "model": d["model"],
        "input_tokens": d["input_tokens"],
        "output_tokens": d["output_tokens"],
        "cost_usd": d["cost_usd"],
        # A hard rule's "escalate" sends the event to a person whatever the confidence (the
        # rule's stand-in, 1.0): it says nothing about how sure the decision was.
        "escalated_by_rule": g["decision"] == "escalate",
    }


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def run_started_at(context: dg.OpExecutionContext) -> datetime | None:
    record = context.instance.get_run_record_by_id(context.run_id)
    return _utc(record.start_time) if record else None


def batch_metrics(
    decisions: list[dict],
    states: list[dict],
    store: MetricsStore,
    batch_id: str,
    run_id: str,
    started_at: datetime | None,
) -> tuple[BatchMetrics, list[dict]]:
    """The figures for the events this run brought to a terminal state (a deferred saga's
    event is counted by the run that finishes it), recorded for Prometheus; and those
    events with their times."""
    from assets.invoices.decisions import invoice_policy

    finished = {s["key"] for s in states}
    times = store.event_times(sorted(finished))
    events = [
        {"key": s["key"], "status": s["status"], **{k: v for k, v in times.get(s["key"], {}).items() if k != "status"}}
        for s in states
    ]
    m = metrics.compute(
        WORKFLOW,
        batch_id,
        run_id,
        started_at,
        events,
        [_decision_record(d) for d in decisions if d["key"] in finished],
        invoice_policy().rule_names(),
    )
    store.record(m)
    return m, events


def stages(context: dg.OpExecutionContext, acted_at: datetime, now: datetime) -> list[tracing.Stage]:
    """The batch's layers from its run's step timings; verification is recording the
    outcomes (audit log, review queue, inbox state) after the sagas ended."""
    stats = context.instance.get_run_step_stats(context.run_id)
    out = []
    for layer, prefix in LAYER_STEPS.items():
        steps = [s for s in stats if (s.step_key == prefix or s.step_key.startswith(prefix + ".")) and s.start_time]
        if steps:
            end = acted_at if layer == "action" else max(_utc(s.end_time) or now for s in steps)
            out.append(tracing.Stage(layer, min(_utc(s.start_time) for s in steps), end))
    out.append(tracing.Stage("verification", acted_at, now))
    return out


def observe_batch(
    context: dg.OpExecutionContext,
    decisions: list[dict],
    states: list[dict],
    store: MetricsStore,
    acted_at: datetime,
    llm_enabled: bool,
    details: dict,
) -> dict:
    """Metrics (recorded, and returned as the run's metadata: the plotted series, then one
    JSON entry with the rest, `details` and their own cost included) and, when an OTLP
    endpoint is configured, one trace per event."""
    t0 = time.perf_counter()
    m, events = batch_metrics(decisions, states, store, context.partition_key, context.run_id, run_started_at(context))
    extra: dict = {**details, "overhead_s": round(time.perf_counter() - t0, 4)}
    if tracing.enabled():
        t1 = time.perf_counter()
        by_key = {d["key"]: d for d in decisions}
        traced = [
            {
                "key": e["key"],
                "received_at": e.get("received_at"),
                "outcome_at": e.get("outcome_at"),
                "attributes": _span_attributes(e, by_key.get(e["key"])),
            }
            for e in events
        ]
        spans = tracing.record_event_traces(
            WORKFLOW, context.partition_key, context.run_id, stages(context, acted_at, clock.now()), traced
        )
        extra["traces"] = {"spans": spans, "overhead_s": round(time.perf_counter() - t1, 4)}
    md = m.metadata(llm=llm_enabled, details=extra)
    md[metrics.DETAILS] = dg.MetadataValue.json(md[metrics.DETAILS])
    return md


def _span_attributes(event: dict, d: dict | None) -> dict:
    attrs = {"bosun.status": event["status"]}
    if d:
        g = d["guardrails"]
        attrs.update(
            {
                "bosun.entity_key": d["entity_key"],
                "bosun.decision": d["final_decision"],
                "bosun.route": d["route"],
                "bosun.confidence": float(d["confidence"]),
                "bosun.model": d["model"],
                "bosun.guardrails": ",".join(g["blocked_by"] + g["flagged_by"]),
            }
        )
    return attrs
