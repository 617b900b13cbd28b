"""The LLM planner: schema-checked JSON plans, one repair, fallback or a human, replay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentflow.kernel.llm.base import ChatMessage, LLMResponse, TokenUsage, ToolSpec
from agentflow.kernel.planning.llm_planner import LLMPlanner, PlanProblems
from agentflow.kernel.planning.model import PlanState, StepOutcome
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.source import PlanValidationError
from agentflow.kernel.planning.validation import load_plan
from tests.kernel.pipeline_fakes import ScriptedLLM
from tests.kernel.planning_helpers import ScriptedExecutor, ScriptedTools, ToolResult

CONFIG = """\
planner:
  type: llm
  max_steps: 3
  actions: [classify, generate, {tool: order_lookup}, {agent: triage_agent}]
  on_invalid: fallback
  fallback:
    type: fsm
    definition:
      states:
        classify: {on_success: generate}
      initial_state: classify
      final_states: [generate]
"""


class PlanningLLM(ScriptedLLM):
    """The scripted LLM, answering JSON requests from a list of plans in order."""

    def __init__(self, plans: list[Any]) -> None:
        super().__init__()
        self.plans = list(plans)

    async def chat(  # type: ignore[override]
        self,
        messages: list[ChatMessage],
        *,
        model: str | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LLMResponse:
        self.json_calls.append({"messages": messages, "metadata": metadata or {}})
        plan = self.plans.pop(0)
        text = plan if isinstance(plan, str) else json.dumps(plan)
        return LLMResponse(text, "gpt-4o-mini", "scripted", TokenUsage(300, 40), 0.0001)


def planner() -> LLMPlanner:
    return load_plan(CONFIG)  # type: ignore[no-any-return]


GOOD = {
    "steps": [
        {"action": "order_lookup", "arguments": {"order_id": "A-1"}, "on_failure": "continue"},
        {"action": "generate"},
    ]
}


async def test_a_valid_plan_runs_as_a_linear_fsm() -> None:
    llm = PlanningLLM([GOOD])
    tools = ScriptedTools({"order_lookup": ToolResult("ok", {"status": "shipped"})})
    executor = ScriptedExecutor()
    result = await planner().run(PlanState(message="where is A-1?"), llm, executor, tools=tools)
    assert result.status == "completed"
    assert tools.calls == [("order_lookup", {"order_id": "A-1"})]
    assert executor.calls == ["generate"]
    assert [r.node for r in result.path] == [
        "plan",
        "step_1_order_lookup",
        "step_2_generate",
        "done",
    ]
    assert result.path[0].tokens == 340
    prompt = llm.json_calls[0]["messages"][-1].content
    assert "order_lookup (tool)" in prompt
    assert "where is A-1?" in prompt
    assert llm.json_calls[0]["metadata"]["purpose"] == "plan"


async def test_an_invalid_plan_is_repaired_once() -> None:
    bad = {"steps": [{"action": "rm_rf"}, {"action": "generate", "on_failure": "pray"}]}
    llm = PlanningLLM([bad, GOOD])
    tools = ScriptedTools({"order_lookup": ToolResult("ok", {})})
    result = await planner().run(PlanState(), llm, ScriptedExecutor(), tools=tools)
    assert result.status == "completed"
    assert [r.status for r in result.path[:2]] == ["error", "ok"]
    assert "action `rm_rf` is not allowed" in (result.path[0].error or "")
    repair = llm.json_calls[1]["messages"][-1].content
    assert "rm_rf" in repair
    assert "on_failure `pray`" in repair


async def test_twice_invalid_falls_back_to_the_fsm_subplan() -> None:
    too_long = {"steps": [{"action": "generate"}] * 4}
    llm = PlanningLLM(["not json at all", too_long])
    executor = ScriptedExecutor()
    result = await planner().run(PlanState(), llm, executor)
    assert result.status == "completed"
    assert executor.calls == ["classify", "generate"]
    assert result.path[1].transition == "fallback"
    assert "4 steps, at most 3 allowed" in (result.path[1].error or "")


async def test_twice_invalid_without_fallback_pauses_for_a_human() -> None:
    config = {"type": "llm", "actions": ["generate"], "on_invalid": "human"}
    human = load_plan(config)
    result = await human.run(PlanState(), ScriptedLLM(), ScriptedExecutor())  # "no JSON here"
    assert result.status == "paused"
    assert result.snapshot is not None
    assert "invalid plan: not JSON" in (result.error or "")
    # The reviewer answers with a plan; it runs without asking the model again.
    decided = await human.run_plan_json({"steps": [{"action": "generate"}]}, result.state)
    assert decided.status == "failed"  # no executor: the generate step cannot run
    assert decided.nodes == ["step_1_generate"]


async def test_same_plan_json_same_execution() -> None:
    executor_script = {"generate": StepOutcome.failed("boom")}
    plan = {"steps": [{"action": "classify"}, {"action": "generate", "on_failure": "escalate"}]}
    runs = [
        await planner().run_plan_json(
            json.dumps(plan), PlanState(), ScriptedExecutor(executor_script)
        )
        for _ in range(3)
    ]
    assert len({r.signature() for r in runs}) == 1
    assert runs[0].status == "paused"  # the failed step escalates to a human
    assert runs[0].nodes == ["step_1_classify", "step_2_generate", "escalated"]


def test_plan_problems_are_listed_together() -> None:
    with pytest.raises(PlanProblems) as info:
        planner().check({"steps": [{"action": "classify", "arguments": {"x": 1}}], "extra": 1})
    assert info.value.problems == [
        "unknown keys ['extra']",
        "step 1: only tool actions take arguments",
    ]
    with pytest.raises(PlanProblems, match="not JSON"):
        planner().check("```json\n{steps: oops}\n```")
    assert planner().check('```json\n{"steps": [{"action": "classify"}]}\n```')


def test_llm_planner_config_is_validated_with_lines() -> None:
    text = """\
planner:
  type: llm
  actions: [classify, {tool: nope}]
  max_steps: 500
  on_invalid: fallback
"""
    with pytest.raises(PlanValidationError) as info:
        load_plan(text, known=Known(steps={"classify"}, tools={"order_lookup"}))
    assert [str(e) for e in info.value.errors] == [
        "line 2, column 3: llm planner: `on_invalid: fallback` needs a `fallback` plan",
        "line 3, column 23: llm planner: unknown tool `nope`",
        "line 4, column 3: llm planner: `max_steps` must be an integer from 1 to 50",
    ]
