"""The pipeline runs on its planner (issue 16): the default support FSM, a custom plan, the
recorded path, and plan errors at build time."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError
from agentflow.kernel.pipeline import _STEPS
from agentflow.kernel.planning.compiled import compile_fsm
from agentflow.kernel.planning.expressions import ExpressionEvalError, compile_expression
from agentflow.kernel.planning.model import PlanState
from agentflow.kernel.planning.support import SUPPORT_NATIVE_CONDITIONS
from tests.kernel.pipeline_fakes import CATEGORIES, KNOWLEDGE

SKIP_CONTEXT = """\
states:
  classify: {on_success: generate_response, on_error: human_review}
  generate_response: {on_success: evaluate, on_error: human_review}
  evaluate:
    condition: "response.confidence >= state.threshold && !state.escalate"
    on_true: deliver
    on_false: human_review
initial_state: classify
final_states: [deliver, human_review]
"""


async def agent(**config: Any) -> Any:
    return await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .with_config({"confidence": {"default_threshold": 0.5}, **config})
        .build()
    )


def shape(reply: Any) -> list[tuple[Any, ...]]:
    return [
        (s.node, s.action, s.outcome, s.transition, s.via, s.condition) for s in reply.plan_path
    ]


async def test_the_default_plan_records_the_support_path() -> None:
    reply = await (await agent()).process_message("u1", "My login is broken, what can I do?")

    assert not reply.escalated
    assert [s.node for s in reply.plan_path] == [
        "classify", "context", "generate_response", "evaluate", "deliver",
    ]  # fmt: skip
    evaluate = reply.plan_path[3]
    assert (evaluate.transition, evaluate.via) == ("deliver", "on_true")
    assert evaluate.condition == (
        "response.confidence >= (has(state.threshold) ? state.threshold : 0.6)"
    )
    assert reply.plan_path[0].via == "on_success"
    assert reply.plan_path[0].condition is None
    assert reply.plan_path[-1].transition is None
    assert all(s.outcome == "success" and s.duration_ms >= 0.0 for s in reply.plan_path)
    starts = [s.started_ms for s in reply.plan_path]
    assert starts == sorted(starts)
    assert reply.to_dict()["plan_path"][0]["node"] == "classify"


async def test_an_escalation_goes_through_human_review() -> None:
    reply = await (await agent()).process_message("u1", "What is the meaning of life?")

    assert reply.escalated
    assert reply.plan_path[-1].node == "human_review"
    assert reply.plan_path[3].transition == "human_review"


async def test_same_input_same_path() -> None:
    first = await (await agent()).process_message("u1", "My login is broken, what can I do?")
    second = await (await agent()).process_message("u1", "My login is broken, what can I do?")
    assert shape(first) == shape(second)


async def test_a_custom_plan_skips_context_and_its_path_shows_it() -> None:
    planner = {"type": "fsm", "definition": SKIP_CONTEXT}
    reply = await (await agent(planner=planner)).process_message("u1", "I cannot log in")

    assert [s.node for s in reply.plan_path][:3] == ["classify", "generate_response", "evaluate"]
    assert "context" not in reply.timings_ms
    assert reply.plan_path[2].condition == (
        "response.confidence >= state.threshold && !state.escalate"
    )
    assert reply.escalated is (reply.plan_path[-1].node == "human_review")


async def test_a_plan_that_escalates_where_the_evaluator_would_not_says_so() -> None:
    always_review = (
        SKIP_CONTEXT.replace("on_true: deliver", "on_true: human_review")
        .replace("final_states: [deliver, human_review]", "final_states: [human_review]")
        .replace(
            "classify: {on_success: generate_response",
            "classify: {on_success: context, on_error: human_review}\n"
            "  context: {on_success: generate_response",
        )
    )
    planner = {"type": "fsm", "definition": always_review}
    reply = await (await agent(planner=planner)).process_message(
        "u1", "My login is broken, what can I do?"
    )
    assert reply.escalated
    assert reply.escalation_reason == "planned"
    assert reply.proposed_answer


async def test_an_invalid_plan_fails_the_build_with_every_error_and_its_line() -> None:
    broken = SKIP_CONTEXT.replace("on_true: deliver", "on_true: nowhere").replace(
        "generate_response: {", "generate_reply: {"
    )
    with pytest.raises(ConfigError) as info:
        await agent(planner={"type": "fsm", "definition": broken})
    text = str(info.value)
    assert "no state named `nowhere`" in text
    assert "generate_reply" in text
    assert len(info.value.issues) >= 2
    assert all(issue.line for issue in info.value.issues)


def _outcome(test: Any, state: PlanState) -> Any:
    try:
        return test(state)
    except ExpressionEvalError:
        return "error"


CONFIDENCES: list[Any] = [0.0, 0.59, 0.6, 0.61, 1.0, float("nan"), 1, None, "0.9", True]
MISSING = object()  # the key is absent
ESCALATES: list[Any] = [True, False, None, 1, "true", MISSING]


def _states() -> list[PlanState]:
    states = []
    for confidence in CONFIDENCES:
        for threshold in [*CONFIDENCES, MISSING]:
            for escalate in ESCALATES:
                state = PlanState(message="hi")
                state.response["confidence"] = confidence
                if threshold is not MISSING:
                    state.state["threshold"] = threshold
                if escalate is not MISSING:
                    state.state["escalate"] = escalate
                states.append(state)
    without_confidence = PlanState(message="hi")
    del without_confidence.response["confidence"]
    return [*states, without_confidence]


@pytest.mark.parametrize("source", sorted(SUPPORT_NATIVE_CONDITIONS))
def test_native_support_conditions_decide_as_cel_or_defer_to_it(source: str) -> None:
    native = SUPPORT_NATIVE_CONDITIONS[source]
    expression = compile_expression(source, boolean=True)
    decided = 0
    for state in _states():
        answer = native(state)
        if answer is None:
            continue  # CEL decides
        decided += 1
        assert answer == _outcome(lambda s: expression.test(s.variables()), state), state
    assert decided  # the pipeline's own values never reach CEL


async def test_the_compiled_walk_takes_the_cel_path_with_or_without_natives() -> None:
    built = await agent()
    plain = compile_fsm(built.plan, _STEPS)
    assert plain is not None
    messages = ["My login is broken, what can I do?", "What is the meaning of life?"]
    with_natives = [shape(await built.process_message("u1", m)) for m in messages]
    built._compiled = plain
    assert [shape(await built.process_message("u1", m)) for m in messages] == with_natives
