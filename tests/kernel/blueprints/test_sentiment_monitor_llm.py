"""sentiment_monitor_agent with a model configured: the model scores the message and the
trend's window in one call; a failing or malformed answer falls back to the offline analysis.
Against a real OpenAI-compatible HTTP server (tests/kernel/fake_openai_server.py)."""

from __future__ import annotations

import json
from typing import Any

from agentflow.kernel.blueprints.sentiment_monitor import SentimentMonitorAgent, score_sentiment
from tests.kernel.blueprints.test_sentiment_monitor import CALM, History
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    ScriptedResponse,
    chat_completion,
    error,
    strict_provider,
)

# Sarcasm: VADER reads "great" and "wonderful" and calls it positive.
SARCASTIC = "Sure, great, another update that breaks the export. Wonderful."


async def _run(server: FakeOpenAIServer, **config: Any) -> dict[str, Any]:
    async with strict_provider(server) as llm:
        agent = SentimentMonitorAgent(config, history=History({"": list(CALM)}), llm=llm)
        result = await agent.run(SARCASTIC, user_id="cust-1")
    output: dict[str, Any] = result.state.plan_state.state["output"]
    return output


def _scores(*values: float) -> ScriptedResponse:
    return chat_completion(json.dumps({"scores": list(values)}))


async def test_the_model_reads_the_sarcasm_vader_misses() -> None:
    assert score_sentiment(SARCASTIC).label == "positive"  # what the offline analysis says
    with FakeOpenAIServer() as server:
        server.enqueue(_scores(-0.1, 0.5, 0.7, -0.8))
        output = await _run(server, window=5)
        [request] = server.requests
        sent = server.sent_text()

    assert output["scored_by"] == "llm"
    assert output["sentiment"] == {"compound": -0.8, "label": "negative"}
    assert output["alert"] is True
    assert output["reasons"] == ["frustration", "rapid_decline"]
    customer = output["trend"]["customer"]
    assert customer["messages"] == 4
    assert customer["recent"] == [-0.1, 0.5, 0.7, -0.8]
    assert customer["direction"] == "worsening"
    # One call: the earlier messages, then the message, numbered; a JSON answer asked for.
    assert f"[4] {SARCASTIC}" in sent
    assert f"[1] {CALM[0]}" in sent
    assert request.body["response_format"]["type"] == "json_schema"


async def test_only_the_trend_window_is_sent_to_the_model() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(_scores(0.7, -0.8))
        output = await _run(server, window=1)
        sent = server.sent_text()

    assert output["scored_by"] == "llm"
    assert CALM[0] not in sent
    assert f"[1] {CALM[2]}" in sent
    assert output["trend"]["customer"]["messages"] == 4  # all earlier messages counted


async def test_a_failing_model_falls_back_to_the_offline_analysis() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(error(500))
        output = await _run(server)

    assert output["scored_by"] == "offline"
    assert output["sentiment"]["label"] == "positive"  # VADER's reading, sarcasm and all
    assert output["alert"] is False


async def test_a_malformed_answer_falls_back_to_the_offline_analysis() -> None:
    for answer in (
        _scores(-0.8),  # one score for four messages
        _scores(0.1, 0.2, 0.3, -7),  # out of range
        chat_completion('{"scores": "very negative"}'),
        chat_completion("The customer is upset."),
    ):
        with FakeOpenAIServer() as server:
            server.enqueue(answer)
            output = await _run(server)
        assert output["scored_by"] == "offline", answer
        assert output["sentiment"] == score_sentiment(SARCASTIC).to_dict()


async def test_without_a_model_no_call_is_made() -> None:
    agent = SentimentMonitorAgent({}, history=History({"": list(CALM)}))
    result = await agent.run(SARCASTIC, user_id="cust-1")

    assert result.state.plan_state.state["output"]["scored_by"] == "offline"
