"""A batch run's metrics and traces, for any workflow: what metrics.py and tracing.py need,
from the decision loop's records and the run's steps."""

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

import dagster as dg

from orchestration.core import clock
from orchestration.verification import metrics, tracing
from orchestration.verification.metrics import BatchMetrics, MetricsStore


def _decision_record(d: dict) -> dict:
    g = d["guardrails"]
    return {
        "decision": d["final_decision"],
        "route": d["route"],
        "confidence": d["confidence"],
        "guardrails": g["blocked_by"] + g["flagged_by"],
        "model": d["model"],
        "input_tokens": d.get("input_tokens", 0),
        "output_tokens": d.get("output_tokens", 0),
        "cost_usd": d.get("cost_usd", 0.0),
        # A hard rule's "escalate" sends the event to a person whatever the confidence (the
        # rule's stand-in, 1.0): it says nothing about how sure the decision was.
        "escalated_by_rule": g["decision"] == "escalate",
    }


def _utc(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def run_started_at(context: dg.OpExecutionContext) -> datetime | None:
    record = context.instance.get_run_record_by_id(context.run.run_id)
    return _utc(record.start_time) if record else None


def batch_metrics(
    workflow: str,
    rule_names: Sequence[str],
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
    finished = {s["key"] for s in states}
    times = store.event_times(sorted(finished))
    events = [
        {"key": s["key"], "status": s["status"], **{k: v for k, v in times.get(s["key"], {}).items() if k != "status"}}
        for s in states
    ]
    m = metrics.compute(
        workflow,
        batch_id,
        run_id,
        started_at,
        events,
        [_decision_record(d) for d in decisions if d["key"] in finished],
        rule_names,
    )
    store.record(m)
    return m, events


def stages(
    context: dg.OpExecutionContext, layer_steps: Mapping[str, str], acted_at: datetime, now: datetime
) -> list[tracing.Stage]:
    """The batch's layers (`layer_steps`: the step key of each layer's asset) from its run's step timings; verification is recording the
    outcomes (audit log, review queue, inbox state) after the sagas ended."""
    stats = context.instance.get_run_step_stats(context.run.run_id)
    out = []
    for layer, prefix in layer_steps.items():
        steps = [s for s in stats if (s.step_key == prefix or s.step_key.startswith(prefix + ".")) and s.start_time]
        if steps:
            end = acted_at if layer == "action" else max(_utc(s.end_time) or now for s in steps)
            out.append(tracing.Stage(layer, min(_utc(s.start_time) for s in steps), end))
    out.append(tracing.Stage("verification", acted_at, now))
    return out


@dataclass(frozen=True)
class BatchObservation:
    """What a workflow's batch figures need to know of it."""

    workflow: str
    rule_names: Sequence[str]  # every guardrail of its policy (a rule that never fired counts 0)
    layer_steps: Mapping[str, str]  # layer -> the step key of its asset in the batch run


def observe_batch(
    context: dg.OpExecutionContext,
    spec: BatchObservation,
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
    m, events = batch_metrics(
        spec.workflow,
        spec.rule_names,
        decisions,
        states,
        store,
        context.partition_key,
        context.run.run_id,
        run_started_at(context),
    )
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
            spec.workflow,
            context.partition_key,
            context.run.run_id,
            stages(context, spec.layer_steps, acted_at, clock.now()),
            traced,
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
