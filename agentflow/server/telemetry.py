"""OpenTelemetry tracing of the web server and the workers (docs/operations.md, Tracing).

Off and free unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: then every HTTP request
(Django instrumentation), Celery task (Celery instrumentation, context carried in the
message from the API into the worker), run and LLM call (agentflow/kernel/tracing.py) is a
span, exported over OTLP/HTTP in batches. The exporter reads the standard ``OTEL_*``
variables itself (headers, timeout, compression); ``OTEL_SERVICE_NAME`` names the process
group (default ``agentflow``).
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor

_lock = threading.Lock()
_provider: TracerProvider | None = None


def configure_tracing(
    component: str, *, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """Install the tracer provider and the instrumentations, once per process.

    ``component`` (``web``, ``worker``) is the resource's ``agentflow.component``;
    ``processor`` replaces the OTLP export (tests pass an in-memory one).
    Returns the provider, or None when tracing is off (no endpoint, no processor).
    """
    global _provider
    with _lock:
        if _provider is not None:
            return _provider
        if processor is None:
            if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                return None
            processor = BatchSpanProcessor(_otlp_exporter())
        resource = Resource.create(
            {
                "service.name": os.environ.get("OTEL_SERVICE_NAME") or "agentflow",
                "agentflow.component": component,
            }
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _instrument()
        _provider = provider
        return provider


def _otlp_exporter() -> SpanExporter:
    # Imported only when tracing is on: the exporter pulls in protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def _instrument() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415
    from opentelemetry.instrumentation.django import DjangoInstrumentor  # noqa: PLC0415

    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()


def shutdown_tracing() -> None:
    """Export what is buffered and take the instrumentations out (a worker shutting down)."""
    global _provider
    with _lock:
        if _provider is None:
            return
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.django import DjangoInstrumentor  # noqa: PLC0415

        DjangoInstrumentor().uninstrument()
        CeleryInstrumentor().uninstrument()
        _provider.shutdown()
        _provider = None
