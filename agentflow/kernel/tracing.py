"""OpenTelemetry spans of the kernel: one per message processed (a platform run) and one
per LLM call, with the GenAI semantic conventions (``gen_ai.*``) for the model call.

Only the OpenTelemetry *API* is used here: with no SDK configured (the platform configures
one when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, agentflow/server/telemetry.py; a library
user configures their own) every span is a non-recording no-op, and the attribute work
below is skipped (``is_recording``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from agentflow.kernel.llm.base import LLMResponse
    from agentflow.kernel.results import AgentReply

tracer = trace.get_tracer("agentflow")

# Our own attributes, named under "agentflow." (the conventions reserve no such namespace).
_CONTEXT_ATTRIBUTES = {
    "tenant_id": "agentflow.tenant_id",
    "agent_id": "agentflow.agent_id",
    "run_id": "agentflow.run_id",
    "correlation_id": "agentflow.correlation_id",
}


@contextmanager
def run_span(ctx: Mapping[str, Any]) -> Iterator[trace.Span]:
    """The span of one message through the pipeline (a run, on the platform)."""
    with tracer.start_as_current_span("agentflow.run") as span:
        if span.is_recording():
            for key, attribute in _CONTEXT_ATTRIBUTES.items():
                value = ctx.get(key)
                if value is not None:
                    span.set_attribute(attribute, str(value))
        yield span


def record_reply(span: trace.Span, reply: AgentReply) -> None:
    if span.is_recording():
        span.set_attribute("agentflow.intent", reply.intent)
        span.set_attribute("agentflow.confidence", float(reply.confidence))
        span.set_attribute("agentflow.escalated", bool(reply.escalated))


@contextmanager
def llm_span(operation: str, model: str | None) -> Iterator[trace.Span]:
    """``chat {model}`` (or ``embeddings ...``), kind CLIENT, as the GenAI conventions name it."""
    name = f"{operation} {model}" if model else operation
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT) as span:
        if span.is_recording():
            span.set_attribute("gen_ai.operation.name", operation)
            if model:
                span.set_attribute("gen_ai.request.model", model)
        yield span


def record_llm_response(span: trace.Span, response: LLMResponse) -> None:
    if not span.is_recording():
        return
    span.set_attribute("gen_ai.system", response.provider)
    span.set_attribute("gen_ai.response.model", response.model)
    span.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)
    span.set_attribute("agentflow.cost_usd", float(response.cost_usd))
    if response.metadata.get("offline"):
        span.set_attribute("agentflow.offline", True)
