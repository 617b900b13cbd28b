"""Replanning strategies per trigger: retry with backoff, fallback, escalate, continue."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.kernel.llm.base import BudgetExceeded
from agentflow.kernel.planning.behavior_tree import load_behavior_tree
from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import PlanState, StepOutcome
from agentflow.kernel.planning.replanning import ReplanPolicy, run_with_replanning
from tests.kernel.planning_helpers import ScriptedExecutor

FSM = {
    "states": {
        "fetch": {"on_success": "answer", "on_error": "apologise", "timeout": "30ms"},
    },
    "initial_state": "fetch",
    "final_states": ["answer", "apologise"],
}
SIMPLE = {
    "states": {"template": {"on_success": "done"}},
    "initial_state": "template",
    "final_states": ["done"],
}


def flaky(failures: int) -> Any:
    calls = {"n": 0}

    def step(state: PlanState) -> StepOutcome:
        calls["n"] += 1
        return StepOutcome.failed("flaky") if calls["n"] <= failures else StepOutcome.ok()

    return step


async def test_retry_with_backoff_then_success(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("agentflow.kernel.planning.fsm.asyncio.sleep", fake_sleep)
    policy = ReplanPolicy.from_config(
        {"failure": {"strategy": "retry", "max_attempts": 3, "backoff_s": 0.1, "factor": 2}}
    )
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor({"fetch": flaky(2)}), policy
    )
    assert result.nodes == ["fetch", "fetch", "fetch", "answer"]
    assert [r.attempt for r in result.path[:3]] == [1, 2, 3]
    assert [r.via for r in result.path[:2]] == ["retry", "retry"]
    assert slept == [0.1, 0.2]


async def test_retries_exhausted_then_escalate_pauses_at_the_step() -> None:
    policy = ReplanPolicy.from_config(
        {"failure": {"strategy": "retry", "max_attempts": 2, "then": "escalate"}}
    )
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor({"fetch": flaky(5)}), policy
    )
    assert result.status == "paused"
    assert result.snapshot is not None
    assert result.snapshot.node == "fetch"
    assert policy.decisions == [
        ("failure", "fetch", "retry", 1),
        ("failure", "fetch", "escalate", 2),
    ]


async def test_timeout_falls_back_to_a_simpler_plan() -> None:
    policy = ReplanPolicy.from_config({"timeout": {"strategy": "fallback"}})
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor(delay=0.5), policy, fallback=load_fsm(SIMPLE)
    )
    assert result.status == "completed"
    assert [r.status for r in result.path] == ["timeout", "ok", "ok"]
    assert result.nodes == ["fetch", "template", "done"]
    assert [r.index for r in result.path] == [0, 1, 2]


async def test_budget_refusal_escalates() -> None:
    def refuse(state: PlanState) -> StepOutcome:
        raise BudgetExceeded("agent:a", 1.0, 0.99, 0.05)

    policy = ReplanPolicy.from_config({"budget": {"strategy": "escalate"}})
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor({"fetch": refuse}), policy
    )
    assert result.status == "paused"
    assert policy.decisions[0][0] == "budget"


async def test_quality_below_threshold_retries_then_escalates() -> None:
    answers = iter([0.3, 0.8])

    def generate(state: PlanState) -> StepOutcome:
        state.response["confidence"] = next(answers)
        return StepOutcome.ok()

    policy = ReplanPolicy.from_config(
        {
            "quality": {
                "strategy": "retry",
                "max_attempts": 2,
                "check": "response.confidence >= 0.6",
                "steps": ["fetch"],
                "then": "escalate",
            }
        }
    )
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor({"fetch": generate}), policy
    )
    assert result.nodes == ["fetch", "fetch", "answer"]
    assert "quality: response.confidence >= 0.6 does not hold" in (result.path[0].error or "")


async def test_an_external_event_interrupts_the_next_step() -> None:
    policy = ReplanPolicy.from_config({"external": {"strategy": "escalate"}})
    policy.signal("customer replied")
    executor = ScriptedExecutor()
    result = await run_with_replanning(load_fsm(FSM), PlanState(), executor, policy)
    assert result.status == "paused"
    assert executor.calls == []
    assert result.path[0].error == "external: customer replied"


async def test_behavior_tree_actions_retry_too() -> None:
    tree = load_behavior_tree({"root": {"type": "action", "step": "fetch"}})
    policy = ReplanPolicy.from_config({"failure": {"strategy": "retry", "max_attempts": 3}})
    result = await run_with_replanning(
        tree, PlanState(), ScriptedExecutor({"fetch": flaky(1)}), policy
    )
    assert result.status == "completed"
    assert [r.attempt for r in result.path] == [1, 2]


async def test_no_rule_follows_the_plan() -> None:
    policy = ReplanPolicy.from_config({})
    result = await run_with_replanning(
        load_fsm(FSM), PlanState(), ScriptedExecutor({"fetch": flaky(1)}), policy
    )
    assert result.nodes == ["fetch", "apologise"]


def test_bad_config_lists_every_problem() -> None:
    with pytest.raises(ValueError, match="replanning: ") as info:
        ReplanPolicy.from_config(
            {
                "failure": {"strategy": "pray"},
                "mood": {"strategy": "retry"},
                "quality": {"strategy": "retry", "check": "__import__('os')", "then": "retry"},
            }
        )
    message = str(info.value)
    assert "strategy `pray`" in message
    assert "unknown trigger `mood`" in message
    assert "unknown function `__import__()`" in message
    assert "`then` cannot be retry" in message
