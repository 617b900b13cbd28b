"""sentiment_monitor_agent through the API on a real worker: config checks, trend over the
customer's messages, a review request for a frustrated customer, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Message
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"
CALM = "Hi, my CSV export fails with an 'unexpected column' error. Could you help?"
THANKS = "Thanks for the quick reply, the new template works great!"
ANGRY = (
    "This is ridiculous. It's still not working after your 'fix' and nobody has called me "
    "back. Third time I'm asking."
)


def create(persona: Persona, config: dict[str, Any] | None = None) -> Any:
    body = {"name": "mood", "blueprint": "sentiment_monitor_agent", "config": config or {}}
    return persona.post(AGENTS, body)


def say(persona: Persona, agent_id: str, text: str, user: str = "cust-1", **meta: Any) -> Any:
    response = persona.post(
        f"{AGENTS}/{agent_id}/runs",
        {"user_id": user, "message": text, "metadata": meta},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"frustration_threshold": 0.3}, "frustration_threshold"),
        ({"drop_delta": 0}, "drop_delta"),
        ({"window": 0}, "window"),
        ({"history_limit": "all"}, "history_limit"),
        ({"alert_channel": "slack"}, "alert_channel"),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(create(owner, config), field)


def test_a_frustrated_customer_reaches_a_person_with_the_trend_that_shows_it(
    owner: Persona, celery_worker_app: object
) -> None:
    created = create(owner)
    assert created.status_code == 201, created.json()
    agent_id = created.json()["id"]

    calm = say(owner, agent_id, CALM)
    assert calm["status"] == "completed"
    assert calm["result"]["metadata"]["output"]["alert"] is False
    thanks = say(owner, agent_id, THANKS)["result"]["metadata"]["output"]
    assert thanks["sentiment"]["label"] == "positive"
    assert thanks["trend"]["customer"]["messages"] == 2

    angry = say(owner, agent_id, ANGRY)
    assert angry["status"] == "awaiting_review"
    result = angry["result"]
    assert result["escalated"] is True
    assert result["escalation_reason"] == "frustration: frustration, rapid_decline"
    assert result["intent"] == "FRUSTRATED"
    assert result["proposed_answer"].startswith("Sentiment negative")
    output = result["metadata"]["output"]
    assert output["reasons"] == ["frustration", "rapid_decline"]
    assert output["trend"]["customer"]["messages"] == 3
    assert output["trend"]["customer"]["direction"] == "worsening"
    with tenant_scope(owner.tenant.pk):
        review = HITLRequest.objects.get(run_id=angry["id"])
    assert review.escalation_reason == "frustration: frustration, rapid_decline"
    steps = owner.get(f"/api/v1/runs/{angry['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["score", "trend", "assess", "alert"]


def test_the_thread_trend_reads_only_that_threads_messages(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = create(owner).json()["id"]
    say(owner, agent_id, ANGRY, thread_id="t-old")
    say(owner, agent_id, THANKS, thread_id="t-new")
    output = say(owner, agent_id, "Great, all sorted, thanks!", thread_id="t-new")["result"]
    trend = output["metadata"]["output"]["trend"]
    assert trend["customer"]["messages"] == 3
    assert trend["thread"]["messages"] == 2


def test_one_tenants_customer_history_never_reaches_another_tenant(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    owners = create(owner).json()["id"]
    say(owner, owners, CALM)
    say(owner, owners, THANKS)
    assert outsider.get(f"{AGENTS}/{owners}").status_code == 404
    with nothing_written(owner.tenant, outsider.tenant):
        refused = outsider.post(f"{AGENTS}/{owners}/runs", {"user_id": "cust-1", "message": "x"})
    assert refused.status_code == 404

    theirs = create(outsider).json()["id"]
    # The same end-user id in another tenant is another customer: no history, no decline.
    output = say(outsider, theirs, "Hmm, the export doesn't work now.")["result"]
    trend = output["metadata"]["output"]["trend"]["customer"]
    assert trend["messages"] == 1
    with tenant_scope(outsider.tenant.pk):
        assert Message.objects.filter(role="user").count() == 1
