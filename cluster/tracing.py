"""OpenTelemetry traces: one request's spans from the gateway through the domain
deployment and the ShardManager down to each SQL statement.

Ray does not carry trace context across actor calls, so we carry it ourselves as a
W3C `traceparent` carrier: the gateway puts it in the `Principal` every service
method receives, the service boundary (`deployments/_kit/boundary.py`) starts the
service span under it, and `Shards` passes
it to `ShardManager.run`, whose transaction span parents one span per statement.

Off unless an exporter is configured: `NEXTFLOW_OTEL_ENDPOINT` (OTLP over HTTP, e.g.
Jaeger's `http://jaeger:4318`) and/or `NEXTFLOW_OTEL_SPANS_DIR` (one JSON span per line,
a file per process; what the tests read). `NEXTFLOW_OTEL_SAMPLING_RATIO` samples new
traces (a caller's sampled `traceparent` is always followed).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from cluster.settings import get_settings

_lock = threading.Lock()
_enabled: bool | None = None


def enabled() -> bool:
    """Whether this process exports spans (configures it on the first call)."""
    global _enabled
    if _enabled is None:
        with _lock:
            if _enabled is None:
                _enabled = _configure()
    return _enabled


def _configure() -> bool:
    settings = get_settings()
    if not settings.otel_endpoint and settings.otel_spans_dir is None:
        return False
    out = None
    if settings.otel_spans_dir is not None:
        settings.otel_spans_dir.mkdir(parents=True, exist_ok=True)
        out = (settings.otel_spans_dir / f"spans-{os.getpid()}.jsonl").open("a", buffering=1)
        # Registered before the provider's own exit hook, so it runs after it (LIFO).
        atexit.register(out.close)
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "process.pid": os.getpid()}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sampling_ratio)),
    )
    if settings.otel_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if out is not None:
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def tracer() -> trace.Tracer:
    enabled()
    return trace.get_tracer("nextflow")


def carrier() -> dict[str, str]:
    """The current span's context as W3C headers, to hand across a Ray call ({} when
    tracing is off or nothing is being traced)."""
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def context_from(headers: Mapping[str, str] | None) -> Context | None:
    """The parent context a carrier names (None: start a new trace)."""
    if not headers:
        return None
    return propagate.extract(dict(headers))


def current_ids() -> dict[str, Any]:
    """`trace_id` and `span_id` of the current span, for log records."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
