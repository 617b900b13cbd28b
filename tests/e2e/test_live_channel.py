"""The live channel in a real browser: a tenant's members see its review queue change at
once, another tenant's members never do."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import UI
from tests.platform.api.conftest import make_agent, make_persona
from tests.platform.hitl.conftest import ALWAYS_REVIEW, make_member

pytestmark = pytest.mark.django_db(transaction=True)

LISTEN = """() => {
  window.events = [];
  const socket = new WebSocket(`ws://${location.host}/ws/live/`);
  socket.onmessage = (message) => window.events.push(JSON.parse(message.data));
  window.liveSocket = socket;
}"""


def _listening(ui: UI, user: Any) -> Any:
    page = ui.signed_in(user)
    page.goto("/healthz")
    page.evaluate(LISTEN)
    page.wait_for_function("window.events.some(e => e.type === 'hello')")
    return page


def test_review_queue_events_reach_the_tenants_members_only(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    reviewer = make_member(acme.tenant, "rita", "reviewer")
    stranger = make_member(make_persona("Globex", tier="professional").tenant, "gus", "operator")
    ours, theirs = _listening(ui, reviewer.user), _listening(ui, stranger.user)

    response = httpx.post(
        f"{live_url}/api/v1/agents/{agent.pk}/runs",
        json={"user_id": "customer-1", "message": ALWAYS_REVIEW},
        headers={"Authorization": f"Bearer {acme.key}", "Prefer": "respond-async"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]

    handle = ours.wait_for_function(
        f"window.events.find(e => e.type === 'hitl.queued' && e.request.run_id === '{run_id}')"
    )
    queued = handle.json_value()
    assert queued["request"]["question"] == ALWAYS_REVIEW
    time.sleep(0.5)  # time enough for a leak to arrive
    leaked = theirs.evaluate("window.events.filter(e => e.type !== 'hello')")
    assert leaked == []
