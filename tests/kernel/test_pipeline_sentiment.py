"""A frustrated customer reaches a person sooner: the support pipeline's `sentiment` check.

The message is scored with the sentiment_monitor blueprint's VADER analyser; at or below
`escalate_below` (or, with `drop_delta`, after a fast fall) it escalates with the reason
``frustrated`` whatever the answer's confidence, and the score is in the reply's metadata.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError, ConfigLoader
from tests.kernel.pipeline_fakes import CATEGORIES, KNOWLEDGE, ScriptedLLM

FURIOUS = (
    "My login is broken AGAIN. Third time I ask, still not working and nobody has replied. "
    "This is a joke, I am fed up!"
)
CALM = "My login is broken, what can I do?"


ANSWER = "Clear your browser cookies, then sign in again with 'Forgot password'."


async def agent_with(**config: Any) -> Any:
    """An agent whose answers are confident: only the sentiment check can escalate them."""
    return await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .with_config({"confidence": {"default_threshold": 0.5}, **config})
        .build(ScriptedLLM(ANSWER, confidence=0.95))
    )


async def test_a_furious_message_escalates_as_frustrated_with_its_score() -> None:
    agent = await agent_with(sentiment={"escalate_below": -0.6})
    assert agent._compiled is not None  # the compiled fast path decides it

    furious = await agent.process_message("u1", FURIOUS)
    calm = await agent.process_message("u2", CALM)

    assert furious.escalated
    assert furious.escalation_reason == "frustrated"
    sentiment = furious.metadata["sentiment"]
    assert sentiment["score"] <= -0.6
    assert sentiment["label"] == "negative"
    assert sentiment["frustrated"] is True
    assert sentiment["reasons"] == ["frustration"]
    # The answer found is kept for the reviewer; the customer reads the escalation message.
    assert furious.proposed_answer == ANSWER
    assert furious.content != ANSWER
    assert [step.node for step in furious.plan_path][-1] == "human_review"

    assert not calm.escalated, calm.to_dict()
    assert -0.6 < calm.metadata["sentiment"]["score"] < 0
    assert calm.metadata["sentiment"]["frustrated"] is False


async def test_without_the_section_nothing_is_scored() -> None:
    agent = await agent_with()

    reply = await agent.process_message("u1", FURIOUS)

    assert not reply.escalated, reply.to_dict()  # the same message, answered
    assert reply.content == ANSWER
    assert "sentiment" not in reply.metadata


async def test_a_fast_fall_within_the_session_escalates_when_the_trend_is_checked() -> None:
    trended = await agent_with(sentiment={"escalate_below": -0.6, "drop_delta": 0.8})
    plain = await agent_with(sentiment={"escalate_below": -0.6})
    for agent in (trended, plain):
        first = await agent.process_message("u1", "Thanks, that worked great!")
        assert not first.escalated

    fallen = await trended.process_message("u1", CALM)
    level = await plain.process_message("u1", CALM)

    assert fallen.escalation_reason == "frustrated"
    assert fallen.metadata["sentiment"]["reasons"] == ["rapid_decline"]
    trend = fallen.metadata["sentiment"]["trend"]
    assert trend["direction"] == "worsening"
    assert trend["delta"] <= -0.8
    assert not level.escalated
    assert level.metadata["sentiment"]["trend"] is None


async def test_a_forced_reason_comes_before_frustration() -> None:
    # No provider answered: the customer gets the template, the reason says why.
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_config({"sentiment": {"escalate_below": -0.6}})
        .build(ScriptedLLM(fail=True))
    )

    reply = await agent.process_message("u1", FURIOUS)

    assert reply.escalation_reason == "llm_unavailable"
    assert reply.metadata["sentiment"]["frustrated"] is True


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"escalate_below": 0.3}, "sentiment.escalate_below"),
        ({"escalate_below": -1.5}, "sentiment.escalate_below"),
        ({"drop_delta": 0}, "sentiment.drop_delta"),
        ({"window": 0}, "sentiment.window"),
        ({"threshold": -0.5}, "sentiment.threshold"),
    ],
)
def test_bad_sentiment_settings_name_the_field(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load({"sentiment": section})

    assert field in [issue.path for issue in caught.value.issues]
