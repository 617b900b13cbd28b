"""OpenTelemetry spans of the kernel: one per message processed (a platform run), one per
plan step, one per tool call and one per LLM call, with the GenAI semantic conventions
(``gen_ai.*``) for the model and tool calls.

Only the OpenTelemetry *API* is used here: with no SDK configured (the platform configures
one when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, agentflow/server/telemetry.py; a library
user configures their own) every span is a non-recording no-op, and the attribute work
below is skipped (``is_recording``). The run and LLM spans are not even started then: the
API's no-op span still costs a context attach and detach (the two took ~20 us of a ~170 us
message in bench/kernel_overhead.py), so with no SDK they hand out one shared invalid span.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace

if TYPE_CHECKING:
    from agentflow.kernel.llm.base import LLMResponse
    from agentflow.kernel.planning.model import StepOutcome
    from agentflow.kernel.results import AgentReply

tracer = trace.get_tracer("agentflow")
T = TypeVar("T")

# Our own attributes, named under "agentflow." (the conventions reserve no such namespace).
_CONTEXT_ATTRIBUTES = {
    "tenant_id": "agentflow.tenant_id",
    "agent_id": "agentflow.agent_id",
    "run_id": "agentflow.run_id",
    "correlation_id": "agentflow.correlation_id",
}


class _NoSpan(AbstractContextManager[trace.Span]):
    """A span context when nothing records: enters and leaves nothing, yields the API's
    invalid span (not recording, so every ``record_*`` below returns at once)."""

    __slots__ = ()

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def run_span(ctx: Mapping[str, Any]) -> AbstractContextManager[trace.Span]:
    """The span of one message through the pipeline (a run, on the platform)."""
    return _run_span(ctx) if active() else _NO_SPAN


@contextmanager
def _run_span(ctx: Mapping[str, Any]) -> Iterator[trace.Span]:
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


def llm_span(operation: str, model: str | None) -> AbstractContextManager[trace.Span]:
    """``chat {model}`` (or ``embeddings ...``), kind CLIENT, as the GenAI conventions name it."""
    return _llm_span(operation, model) if active() else _NO_SPAN


@contextmanager
def _llm_span(operation: str, model: str | None) -> Iterator[trace.Span]:
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


# ------------------------------------------------------------------ plan steps and tools

_OFF = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_UNKNOWN = object()


def active() -> bool:
    """Whether a tracer provider (an SDK) is installed. A plan step takes a few µs, so its
    span is skipped altogether when nothing would record it, and this check must cost less
    than the step: the API's global is read directly (``get_tracer_provider`` looks the
    environment up on every call, ~2 µs), the public call only if a release renames it."""
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    return provider is not None and not isinstance(provider, _OFF)


@contextmanager
def step_span(node: str, action: str) -> Iterator[trace.Span]:
    """``agentflow.plan_step``: one action of a plan (``step:classify``, ``tool:x``) at its
    node."""
    with tracer.start_as_current_span("agentflow.plan_step") as span:
        if span.is_recording():
            span.set_attribute("agentflow.plan.node", node)
            span.set_attribute("agentflow.plan.action", action)
        yield span


def record_outcome(span: trace.Span, outcome: str, error: str | None = None) -> None:
    """The step's outcome as its path records it; an error or timeout marks the span."""
    if not span.is_recording():
        return
    span.set_attribute("agentflow.plan.outcome", outcome)
    if outcome in ("error", "timeout"):
        span.set_status(trace.Status(trace.StatusCode.ERROR, error or outcome))


def record_step(span: trace.Span, outcome: StepOutcome) -> None:
    record_outcome(span, outcome.status, outcome.error)
    if outcome.tokens and span.is_recording():
        span.set_attribute("agentflow.tokens", outcome.tokens)


async def call_tool(
    invoke: Callable[[str, dict[str, Any]], Awaitable[T]], tool_id: str, arguments: dict[str, Any]
) -> T:
    """``invoke(tool_id, arguments)``, inside an ``execute_tool {tool}`` span (the GenAI
    conventions' name) with the call's status and duration when tracing is on."""
    if not active():
        return await invoke(tool_id, arguments)
    with tracer.start_as_current_span(f"execute_tool {tool_id}") as span:
        started = time.perf_counter()
        result = await invoke(tool_id, arguments)
        if span.is_recording():
            status = str(getattr(result, "status", "error"))
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            span.set_attribute("gen_ai.tool.name", tool_id)
            span.set_attribute("agentflow.tool.status", status)
            elapsed_ms = (time.perf_counter() - started) * 1000
            span.set_attribute("agentflow.tool.duration_ms", round(elapsed_ms, 3))
            if status not in ("ok", "needs_approval"):
                error = getattr(result, "error", None)
                described = f"{status}: {error}" if error else status
                span.set_status(trace.Status(trace.StatusCode.ERROR, described))
        return result
