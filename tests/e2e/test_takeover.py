"""Human takeover in headless Chromium, end to end: a reviewer takes a conversation over on
its page, a customer message sent through the API is not answered by the agent and appears
live, the reviewer's reply joins the conversation, and after handing back the agent answers
again. Runs go through a real Celery worker; the customer uses the public API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentflow.models import AgentSession, Run
from tenants.context import tenant_scope
from tests.e2e.conftest import UI, VIEWPORT
from tests.e2e.test_dashboard import ask, live, member
from tests.e2e.test_dashboard_phone import PHONE, fits_the_screen
from tests.platform.api.conftest import make_agent, make_persona
from tests.platform.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = "How do I reset my password?"


def _roles(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all(
            "[data-testid=conversation] [data-message-id]",
            "items => items.map((item) => item.dataset.role + ':' + item.dataset.author)",
        )
    )


def _conversation(base: str, key: str, session_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/api/v1/sessions/{session_id}/conversation",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_a_reviewer_takes_a_conversation_over_answers_and_hands_it_back(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    member(acme.tenant, "rita", "reviewer")
    first = ask(live_url, acme.key, agent.pk, QUESTION, wait=True)
    assert first["status"] == "completed"
    session_id = first["session_id"]

    # From the run's page to its conversation; the agent answers it for now.
    page = live(ui.login("rita", PASSWORD, f"/runs/{first['id']}/"))
    page.click("[data-testid=run-conversation]")
    page.wait_for_url(f"**/sessions/{session_id}/")
    live(page)
    assert page.get_attribute("[data-testid=session-mode]", "data-mode") == "agent"
    assert _roles(page) == ["user:", "assistant:"]

    page.click("[data-action=takeover]")
    page.wait_for_selector("[data-testid=session-mode][data-mode=human]")
    live(page)

    # The customer writes again through the API: accepted (201), not answered by the agent,
    # and on the reviewer's page at once.
    held = ask(live_url, acme.key, agent.pk, "Still locked out, please help", wait=True)
    assert held["status"] == "completed"
    assert held["result"]["content"] == ""
    assert held["result"]["metadata"]["handled_by"] == "human"
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=conversation] [data-message-id]').length === 3"
    )
    assert _roles(page) == ["user:", "assistant:", "user:"]
    assert "Still locked out" in (page.text_content("[data-testid=conversation]") or "")

    page.fill("#id_content", "Rita here: I unlocked your account, try again now.")
    page.click("[data-action=reply]")
    page.wait_for_selector("[data-message-id][data-author=rita]")
    page.locator("[data-testid=takeover-actions]").scroll_into_view_if_needed()
    ui.screenshot(page, "takeover")
    page.set_viewport_size(PHONE)
    assert fits_the_screen(page)
    ui.screenshot(page, "takeover-phone")
    page.set_viewport_size(VIEWPORT)
    messages = _conversation(live_url, acme.key, session_id)
    assert [(m["role"], m["author"]) for m in messages][-1] == (
        "assistant",
        {"id": messages[-1]["author"]["id"], "username": "rita"},
    )
    assert messages[-1]["content"] == "Rita here: I unlocked your account, try again now."

    page.click("[data-action=handback]")
    page.wait_for_selector("[data-testid=session-mode][data-mode=agent]")
    live(page)
    again = ask(live_url, acme.key, agent.pk, QUESTION, wait=True)
    assert again["status"] == "completed"
    assert again["result"]["content"]
    # The agent's answer reaches the open page live as well.
    page.wait_for_function(
        "document.querySelectorAll('[data-testid=conversation] [data-message-id]').length === 6"
    )
    assert _roles(page)[-2:] == ["user:", "assistant:"]
    with tenant_scope(acme.tenant.pk):
        session = AgentSession.objects.get(pk=session_id)
        assert (session.mode, session.taken_by_id) == ("agent", None)
        assert Run.objects.filter(session=session).count() == 3
