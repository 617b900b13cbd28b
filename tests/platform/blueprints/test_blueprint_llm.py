"""sentiment_monitor_agent and code_review_agent with the agent's configured model, through
the API on a real Celery worker, against a real OpenAI-compatible HTTP server; a failing
model leaves the offline analysis (issue 18)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.blueprints.test_code_review_llm import BYPASS, BYPASS_FINDING
from tests.kernel.blueprints.test_sentiment_monitor_llm import SARCASTIC
from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion, error
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"


@pytest.fixture
def server(settings: Any, monkeypatch: Any) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [fake.base_url]}
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        yield fake


def _agent(persona: Persona, blueprint: str, server: FakeOpenAIServer) -> str:
    provider = {
        "kind": "openai",
        "model": "gpt-4o-mini",
        "base_url": server.base_url,
        "api_key": "${OPENAI_API_KEY}",
        "max_retries": 0,
    }
    response = persona.post(
        AGENTS,
        {"name": blueprint, "blueprint": blueprint, "config": {"llm": {"providers": [provider]}}},
    )
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def _run(persona: Persona, agent_id: str, message: str) -> dict[str, Any]:
    response = persona.post(
        f"{AGENTS}/{agent_id}/runs",
        {"user_id": "cust-1", "message": message},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def test_the_monitor_scores_with_the_model_and_falls_back_when_it_fails(
    owner: Persona, server: FakeOpenAIServer, celery_worker_app: object
) -> None:
    agent_id = _agent(owner, "sentiment_monitor_agent", server)

    server.enqueue(chat_completion(json.dumps({"scores": [-0.85]})))
    scored = _run(owner, agent_id, SARCASTIC)
    server.enqueue(error(500))
    fallback = _run(owner, agent_id, SARCASTIC)

    output = scored["result"]["metadata"]["output"]
    assert output["scored_by"] == "llm"
    assert output["sentiment"] == {"compound": -0.85, "label": "negative"}
    assert scored["status"] == "awaiting_review"
    assert scored["result"]["escalation_reason"] == "frustration: frustration"
    assert SARCASTIC in server.sent_text()

    offline = fallback["result"]["metadata"]["output"]
    assert offline["scored_by"] == "offline"
    assert offline["sentiment"]["label"] == "positive"  # VADER's reading of the sarcasm
    assert fallback["status"] == "completed"


def test_the_reviewer_adds_the_models_anchored_findings(
    owner: Persona, server: FakeOpenAIServer, celery_worker_app: object
) -> None:
    agent_id = _agent(owner, "code_review_agent", server)
    server.enqueue(chat_completion(json.dumps({"findings": [BYPASS_FINDING]})))

    body = _run(owner, agent_id, BYPASS)

    output = body["result"]["metadata"]["output"]
    assert output["reviewed_by"] == "llm+rules"
    assert [(f["rule"], f["file"], f["line"]) for f in output["findings"]] == [
        ("llm_review", "accounts/views.py", 21)
    ]
    assert body["status"] == "awaiting_review"
    assert body["result"]["escalation_reason"] == "risky_change"
