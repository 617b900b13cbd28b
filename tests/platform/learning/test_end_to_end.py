"""A Slack mention through the whole platform with a real Celery worker and a real (local)
OpenAI-compatible LLM server: signed delivery → stream → rule → run → LLM → reply.

The webhook text carries an e-mail address and a phone number: the LLM never receives
them (the kernel redacts PII before any call), and it receives the text fenced as
untrusted data, never as instructions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.models import Run
from agentflow.services import create_agent
from learning import services
from learning.models import ActivityEvent
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    RecordedRequest,
    ScriptedResponse,
    chat_completion,
)
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.learning.conftest import make_sender, ticket_payload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ANSWER = "We refunded the duplicate charge; it shows on your card within 5 business days."
EMAIL, PHONE = "dana.smith@example.com", "+1 415 555 0134"


def _answer(request: RecordedRequest) -> ScriptedResponse:
    if request.path.endswith("/chat/completions"):
        return chat_completion(ANSWER)
    return ScriptedResponse(200, {"ok": True})  # the reply endpoint (a Slack incoming webhook)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=_answer) as fake:
        yield fake


def _eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_slack_mention_is_answered_in_its_thread_without_leaking_pii(
    owner: Persona,
    server: FakeOpenAIServer,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    celery_worker_app: object,
) -> None:
    origin = server.base_url.removesuffix("/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "LLM_ALLOWED_BASE_URLS": [server.base_url],
        "WEBHOOK_REPLY_ALLOWED_URLS": [f"{origin}/slack/"],
    }
    config = {
        **SUPPORT_CONFIG,
        "default_threshold": 0.05,
        "llm": {
            "providers": [
                {
                    "kind": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": server.base_url,
                    "api_key": "${OPENAI_API_KEY}",
                    "max_retries": 0,
                }
            ]
        },
    }
    agent = create_agent(
        actor=ACTOR, tenant=owner.tenant, name="slack-bot", blueprint="support_agent", config=config
    )
    services.create_rule(
        actor=ACTOR,
        tenant_id=owner.tenant.pk,
        name="mentions",
        event_kind="slack.app_mention",
        agent=agent,
        reply_url=f"{origin}/slack/hooks/T1",
    )
    text = f"hi, I'm {EMAIL} ({PHONE}). I was charged twice for my plan, please refund"
    response = make_sender(owner, "slack").deliver(ticket_payload("slack", text=text))
    assert response.status_code == 202, response.content

    replies = _eventually(
        lambda: [r for r in server.requests if r.path == "/slack/hooks/T1"], 60, "the reply"
    )
    (run,) = Run.unscoped.filter(tenant=owner.tenant)
    assert run.status == "completed"
    assert replies[0].body == {
        "text": ANSWER,
        "channel": "C1",
        "thread_ts": "1001.000100",
        "run_id": str(run.pk),
        "event_id": response.json()["event_id"],
    }
    llm_calls = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert llm_calls, "the LLM was never asked"
    sent = "\n".join(r.text() for r in llm_calls)
    assert EMAIL not in sent
    assert "415 555 0134" not in sent
    assert "charged twice" in sent
    user_turn = llm_calls[0].messages[-1]
    assert user_turn["role"] == "user"
    assert (
        "[UNTRUSTED DATA from slack webhook slack:thread:T1:C1:1001.000100" in user_turn["content"]
    )
    assert "hi, I'm [EMAIL] ([PHONE])" in user_turn["content"]
    # The event, its run and the run's completion are all in the stream, processed once.
    kinds = sorted(
        ActivityEvent.unscoped.filter(tenant=owner.tenant).values_list("kind", flat=True)
    )
    assert kinds == ["run.completed", "slack.app_mention"]
    _eventually(
        lambda: (
            not ActivityEvent.unscoped.filter(
                tenant=owner.tenant, processed_at__isnull=True
            ).exists()
        ),
        30,
        "both events processed",
    )
