"""The support pipeline follows the planner's replanning rules (issue 16): a timed-out step
is retried when a rule says so, the path records each attempt, and bad rules are refused
when the agent is built."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError
from tests.kernel.pipeline_fakes import CATEGORIES, KNOWLEDGE, ScriptedLLM

PLAN = """\
states:
  classify: {on_success: context, on_error: human_review}
  context: {on_success: generate_response, on_error: generate_response}
  generate_response: {timeout: 0.2, on_success: evaluate, on_error: human_review}
  evaluate:
    condition: "response.confidence >= 0.0"
    on_true: deliver
    on_false: human_review
initial_state: classify
final_states: [deliver, human_review]
"""
RETRY_TIMEOUTS = {"timeout": {"strategy": "retry", "max_attempts": 2}}


def slow_first_answer() -> ScriptedLLM:
    calls = 0

    async def first_is_slow(_: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.0)

    return ScriptedLLM(answer="Open Settings, then Security.", on_call=first_is_slow)


async def ask(replanning: dict[str, Any] | None) -> Any:
    planner: dict[str, Any] = {"type": "fsm", "definition": PLAN}
    if replanning is not None:
        planner["replanning"] = replanning
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .with_config({"planner": planner})
        .build(llm_client=slow_first_answer())
    )
    return await agent.process_message("u1", "My login is broken, what can I do?")


async def test_a_timed_out_step_is_retried_when_a_rule_says_so() -> None:
    reply = await ask(RETRY_TIMEOUTS)

    assert not reply.escalated
    assert reply.content == "Open Settings, then Security."
    generations = [s for s in reply.plan_path if s.node == "generate_response"]
    assert [(s.outcome, s.via) for s in generations] == [
        ("error", "retry"),
        ("success", "on_success"),
    ]
    assert "took longer than 0.2s" in (generations[0].error or "")


async def test_without_rules_the_timeout_follows_on_error() -> None:
    reply = await ask(None)

    assert reply.escalated
    assert [s.node for s in reply.plan_path][-2:] == ["generate_response", "human_review"]


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        ({"slowness": {"strategy": "retry"}}, "unknown trigger `slowness`"),
        ({"timeout": {"strategy": "pray"}}, "strategy `pray`"),
        ({"failure": {"strategy": "retry", "max_attempts": 0}}, "max_attempts"),
    ],
)
async def test_bad_rules_are_refused_at_build(rules: dict[str, Any], says: str) -> None:
    builder = AgentFrameworkBuilder().with_config(
        {"planner": {"type": "fsm", "definition": PLAN, "replanning": rules}}
    )
    with pytest.raises(ConfigError) as refused:
        await builder.build()
    assert refused.value.issues[0].path == "planner.replanning"
    assert says in refused.value.issues[0].reason
