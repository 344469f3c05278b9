"""OpenTelemetry spans per event through the five layers, when an OTLP endpoint is set.

Events are processed in batches, so a layer's time is its batch stage's time: every event
of a batch gets one root span (received_at to its outcome) with one child per layer:
trigger (received until the batch run started), context, decision, action, verification.
The workflow supplies the stage times; here they become spans, exported over OTLP/HTTP to
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK's own
variables, so headers, certificates and the service name `OTEL_SERVICE_NAME` work as
documented by OpenTelemetry).

Optional: the SDK and exporter are the `otel` extra. With no endpoint set, or without the
extra, nothing is imported and nothing is recorded. Spans are flushed at the end of each
batch (bounded by FLUSH_TIMEOUT_MS): run workers are short-lived processes.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
LAYERS = ("trigger", "context", "decision", "action", "verification")
EXPORT_TIMEOUT_S = 5
FLUSH_TIMEOUT_MS = 10_000
# The SDK's span queue holds 2,048 spans by default and drops the rest: flush every this
# many events (6 spans each) so a batch of 1,000 events loses none.
FLUSH_EVERY_EVENTS = 250


@dataclass(frozen=True)
class Stage:
    layer: str  # one of LAYERS
    start: datetime
    end: datetime


def endpoint() -> str | None:
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def enabled() -> bool:
    return tracer_provider() is not None


def tracer_provider():
    """The process's provider for the configured endpoint, or None (tracing off)."""
    url = endpoint()
    return _provider(url, os.environ.get("OTEL_SERVICE_NAME", "bosun")) if url else None


@functools.lru_cache(maxsize=4)
def _provider(url: str, service: str):
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("an OTLP endpoint is set but the `otel` extra is not installed: no spans are recorded")
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # The exporter reads the endpoint (and headers) from the same environment variables.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=EXPORT_TIMEOUT_S)))
    return provider


def _ns(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000_000)


def record_event_traces(
    workflow: str, batch_id: str, run_id: str, stages: list[Stage], events: list[dict], provider=None
) -> int:
    """One trace per event: events are dicts with `key`, `received_at`, `outcome_at` and
    `attributes` (flat str/int/float/bool values; no payload, no personal data). Returns
    the number of spans recorded (0 when tracing is off)."""
    provider = provider or tracer_provider()
    if provider is None or not events:
        return 0
    from opentelemetry import trace

    tracer = provider.get_tracer("bosun")
    common = {"bosun.workflow": workflow, "bosun.batch_id": batch_id, "dagster.run_id": run_id}
    spans = 0
    for i, e in enumerate(events, start=1):
        start = min([e["received_at"], *(s.start for s in stages)]) if e.get("received_at") else stages[0].start
        end = e.get("outcome_at") or stages[-1].end
        root = tracer.start_span(
            f"{workflow} event",
            start_time=_ns(start),
            attributes={**common, "bosun.event.key": e["key"], **e.get("attributes", {})},
        )
        parent = trace.set_span_in_context(root)
        layers = list(stages)
        if e.get("received_at") and stages:
            layers.insert(0, Stage("trigger", e["received_at"], stages[0].start))
        for stage in layers:
            span = tracer.start_span(
                stage.layer,
                context=parent,
                start_time=_ns(stage.start),
                attributes={"bosun.layer": stage.layer, **common},
            )
            span.end(end_time=_ns(max(stage.start, stage.end)))
            spans += 1
        root.end(end_time=_ns(max(start, end)))
        spans += 1
        if i % FLUSH_EVERY_EVENTS == 0 or i == len(events):
            if not provider.force_flush(FLUSH_TIMEOUT_MS):
                log.warning("spans of batch %s not all exported within %d ms", batch_id, FLUSH_TIMEOUT_MS)
    return spans
