"""Spans of plan steps and tool calls (agentflow.kernel.tracing, hooked in ActionRunner.run):
one ``agentflow.plan_step`` per step with its node, action and outcome, one
``execute_tool {tool}`` per tool call under it with the tool id, status and duration; none
at all while no SDK is installed. Recorded by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

from agentflow import AgentFrameworkBuilder
from agentflow.kernel import tracing
from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import PlanState, StepOutcome
from agentflow.kernel.planning.source import parse_source
from tests.kernel.planning_helpers import ScriptedExecutor, ScriptedTools, ToolResult

PLAN = """
states:
  classify:
    action: {step: classify}
    on_success: lookup
  lookup:
    action: {tool: order_lookup, arguments: {order_id: "state.order_id"}}
    on_success: refund
    on_error: apologise
  refund:
    action: {tool: issue_refund, arguments: {order_id: "state.order_id"}}
    on_success: answer
    on_error: apologise
  apologise:
    action: {step: apologise}
    on_success: answer
initial_state: classify
final_states: [answer]
"""
TOOLS = {
    "order_lookup": ToolResult("ok", {"status": "lost"}),
    "issue_refund": ToolResult("denied", error="refunds are off"),
}


def _unset_global_provider() -> None:
    # Process-global, set once: put back as OpenTelemetry's own test utilities do.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _unset_global_provider()
    trace.set_tracer_provider(provider)
    # A fresh proxy, so the module's tracer is not left bound to this provider.
    monkeypatch.setattr(tracing, "tracer", trace.get_tracer("agentflow"))
    yield exporter
    provider.shutdown()
    _unset_global_provider()


async def _run() -> list[str]:
    executor = ScriptedExecutor({"classify": StepOutcome.ok(tokens=12)})
    state = PlanState(state={"order_id": "A-1"})
    result = await load_fsm(parse_source(PLAN)).run(state, executor, tools=ScriptedTools(TOOLS))
    return result.nodes


def _attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_one_span_per_step_with_node_action_and_outcome(
    spans: InMemorySpanExporter,
) -> None:
    nodes = await _run()

    steps = [s for s in spans.get_finished_spans() if s.name == "agentflow.plan_step"]
    assert [_attributes(s)["agentflow.plan.node"] for s in steps] == nodes[: len(steps)]
    first = _attributes(steps[0])
    assert first["agentflow.plan.action"] == "step:classify"
    assert first["agentflow.plan.outcome"] == "ok"
    assert first["agentflow.tokens"] == 12
    by_node = {_attributes(s)["agentflow.plan.node"]: s for s in steps}
    refund = by_node["refund"]
    assert _attributes(refund)["agentflow.plan.action"] == "tool:issue_refund"
    assert _attributes(refund)["agentflow.plan.outcome"] == "error"
    assert refund.status.status_code == StatusCode.ERROR
    assert "denied: refunds are off" in (refund.status.description or "")
    assert by_node["lookup"].status.status_code == StatusCode.UNSET


async def test_one_span_per_tool_call_under_its_step(spans: InMemorySpanExporter) -> None:
    await _run()

    finished = spans.get_finished_spans()
    calls = [s for s in finished if s.name.startswith("execute_tool ")]
    assert [s.name for s in calls] == ["execute_tool order_lookup", "execute_tool issue_refund"]
    steps = {s.context.span_id: s for s in finished if s.name == "agentflow.plan_step"}
    for call in calls:
        attributes = _attributes(call)
        tool = attributes["gen_ai.tool.name"]
        assert attributes["gen_ai.operation.name"] == "execute_tool"
        assert call.parent is not None
        parent = steps[call.parent.span_id]
        assert _attributes(parent)["agentflow.plan.action"] == f"tool:{tool}"
        duration = attributes["agentflow.tool.duration_ms"]
        assert isinstance(duration, float)
        assert 0 <= duration <= (call.end_time - call.start_time) / 1e6  # type: ignore[operator]
    assert _attributes(calls[0])["agentflow.tool.status"] == "ok"
    assert calls[0].status.status_code == StatusCode.UNSET
    assert _attributes(calls[1])["agentflow.tool.status"] == "denied"
    assert calls[1].status.status_code == StatusCode.ERROR


async def test_no_span_is_made_while_no_sdk_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _unset_global_provider()
    assert not tracing.active()
    made = _forbid_spans(monkeypatch)

    assert await _run() == ["classify", "lookup", "refund", "apologise", "answer"]
    assert made == []


async def test_the_support_pipelines_compiled_plan_has_a_span_per_step(
    spans: InMemorySpanExporter,
) -> None:
    agent = await AgentFrameworkBuilder().build()
    try:
        reply = await agent.process_message(user_id="u1", message="where is my parcel")
    finally:
        await agent.aclose()

    finished = spans.get_finished_spans()
    steps = [s for s in finished if s.name == "agentflow.plan_step"]
    assert [_attributes(s)["agentflow.plan.node"] for s in steps] == [
        step.node for step in reply.plan_path
    ]
    assert _attributes(steps[0])["agentflow.plan.action"] == "step:classify"
    run = next(s for s in finished if s.name == "agentflow.run")
    assert {s.parent.span_id for s in steps if s.parent} == {run.context.span_id}


async def test_the_compiled_plan_makes_no_span_while_no_sdk_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _unset_global_provider()

    def refuse(*args: object) -> None:
        raise AssertionError("a plan-step span while tracing is off")

    monkeypatch.setattr(tracing, "step_span", refuse)
    agent = await AgentFrameworkBuilder().build()
    try:
        reply = await agent.process_message(user_id="u1", message="where is my parcel")
    finally:
        await agent.aclose()
    assert reply.plan_path[0].node == "classify"


async def test_a_message_makes_no_span_at_all_while_no_sdk_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not even the run's and the LLM call's no-op spans: each would cost a context attach.
    _unset_global_provider()
    made = _forbid_spans(monkeypatch)
    agent = await AgentFrameworkBuilder().build()
    try:
        reply = await agent.process_message(user_id="u1", message="where is my parcel")
    finally:
        await agent.aclose()
    assert reply.metadata["llm_calls"] == 1  # the answer's call went through the guard
    assert made == []
    with tracing.run_span({"run_id": "r1"}) as span, tracing.llm_span("chat", "m") as call:
        assert not span.is_recording()
        assert not call.is_recording()


async def test_with_an_sdk_the_llm_call_is_a_span_under_its_step_under_the_run(
    spans: InMemorySpanExporter,
) -> None:
    agent = await AgentFrameworkBuilder().build()
    try:
        await agent.process_message(
            user_id="u1", message="where is my parcel", context={"run_id": "r-7"}
        )
    finally:
        await agent.aclose()

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    run = next(s for s in finished if s.name == "agentflow.run")
    assert _attributes(run)["agentflow.run_id"] == "r-7"
    assert "agentflow.intent" in _attributes(run)
    chat = next(s for s in finished if s.name.startswith("chat"))
    assert _attributes(chat)["gen_ai.operation.name"] == "chat"
    assert chat.parent is not None
    step = by_id[chat.parent.span_id]
    assert _attributes(step)["agentflow.plan.node"] == "generate_response"
    assert step.parent is not None
    assert step.parent.span_id == run.context.span_id


def _forbid_spans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Swap in a tracer that fails the test on any span; the names it was asked for."""
    made: list[str] = []

    class Watching:
        def start_as_current_span(self, name: str, **kwargs: object) -> object:
            made.append(name)
            raise AssertionError(f"a span while tracing is off: {name}")

    monkeypatch.setattr(tracing, "tracer", Watching())
    return made
