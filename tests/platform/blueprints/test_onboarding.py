"""onboarding_agent through the API: a journey per user kept in the database, nudges, and
the stall list a scheduled job can read."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from agentflow.blueprints.onboarding import DjangoProgressStore, stalled_users
from agentflow.models import Agent, AgentSession
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"
CHECKLIST: dict[str, Any] = {
    "steps": [
        {
            "id": "connect_helpdesk",
            "title": "Connect your helpdesk",
            "instructions": "Open Integrations and choose Zendesk. Paste your subdomain and an "
            "API token. The token needs the 'tickets:write' scope.",
            "done_when": ["helpdesk connected", "zendesk connected"],
        },
        {
            "id": "import_articles",
            "title": "Import your articles",
            "instructions": "Click 'Import from Zendesk Guide' on the Knowledge page. "
            "Large help centres take a few minutes.",
            "done_when": "confirm",
        },
    ],
    "nudge_after_hours": 24,
}


def _create(persona: Persona, config: dict[str, Any]) -> Any:
    return persona.post(
        AGENTS, {"name": "onboarding", "blueprint": "onboarding_agent", "config": config}
    )


def _agent(persona: Persona, config: dict[str, Any] | None = None) -> str:
    response = _create(persona, CHECKLIST if config is None else config)
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def _say(persona: Persona, agent_id: str, message: str, user: str = "maria") -> dict[str, Any]:
    response = persona.post(
        f"{AGENTS}/{agent_id}/runs",
        {"user_id": user, "message": message},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "completed", body
    result = body["result"]
    return {
        "content": result["content"],
        "intent": result["intent"],
        **result["metadata"]["output"],
    }


def test_the_blueprint_lists_its_schema_and_default_checklist(owner: Persona) -> None:
    listed = {item["name"]: item for item in owner.get("/api/v1/blueprints").json()["results"]}
    blueprint = listed["onboarding_agent"]
    assert [step["id"] for step in blueprint["default_config"]["steps"]][:2] == [
        "create_api_key",
        "create_agent",
    ]
    assert blueprint["config_schema"]["properties"]["nudge_after_hours"]["default"] == 48.0
    assert blueprint["default_planner"]["definition"]["initial_state"] == "load_progress"


def test_a_journey_through_the_api_is_remembered_between_runs(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = _agent(owner)

    first = _say(owner, agent_id, "Hi, I just signed up")
    assert first["current_step"]["id"] == "connect_helpdesk"
    assert first["content"].startswith("Welcome! Let's get you set up in 2 steps.")

    answer = _say(owner, agent_id, "Which scope does the token need?")
    assert answer["event"] == "question"
    assert answer["content"] == (
        "The token needs the 'tickets:write' scope. You are on step 1 of 2: Connect your helpdesk."
    )

    advanced = _say(owner, agent_id, "OK, Zendesk connected")
    assert advanced["event"] == "advanced"
    assert advanced["intent"] == "onboarding.done"
    assert advanced["content"] == (  # the worked example of docs/blueprints.md
        "Great, 'Connect your helpdesk' is done. Step 2 of 2: Import your articles. Click "
        "'Import from Zendesk Guide' on the Knowledge page. Large help centres take a few "
        "minutes. Tell me when it is done."
    )
    assert advanced["remaining_steps"] == ["import_articles"]
    assert advanced["nudge"] is False
    assert advanced["current_step"]["id"] == "import_articles"
    assert advanced["progress"] == {"done": 1, "total": 2}

    with tenant_scope(owner.tenant.pk):
        session = AgentSession.objects.get(agent_id=agent_id, user_id="maria")
    assert session.state["onboarding"]["completed"] == ["connect_helpdesk"]
    assert session.state["onboarding"]["current"] == "import_articles"

    finished = _say(owner, agent_id, "Import finished")
    assert finished["status"] == "completed"
    assert finished["remaining_steps"] == []


def test_a_stalled_user_is_listed_then_nudged_on_return(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = _agent(owner)
    _say(owner, agent_id, "hello")
    _say(owner, agent_id, "hello", user="li")
    with tenant_scope(owner.tenant.pk):
        agent = Agent.objects.get(pk=agent_id)
        session = AgentSession.objects.get(agent=agent, user_id="maria")
        progress = session.state["onboarding"]
        progress["step_started_at"] -= 30 * 3600  # maria: 30 hours on the first step
        AgentSession.objects.filter(pk=session.pk).update(state=session.state)

        (stalled,) = stalled_users(agent)
        assert (stalled.user_id, stalled.step) == ("maria", "connect_helpdesk")
        assert stalled.stalled_hours == pytest.approx(30, abs=0.1)

    back = _say(owner, agent_id, "I'm back")
    assert back["nudge"] is True
    assert back["content"].startswith(
        "Welcome back! You have been on 'Connect your helpdesk' for about 30 hours"
    )
    assert _say(owner, agent_id, "still here")["nudge"] is False
    with tenant_scope(owner.tenant.pk):
        assert stalled_users(agent) == []  # nudged: counted again from the nudge
        later = timezone.now() + timedelta(hours=25)
        assert {user.user_id for user in stalled_users(agent, now=later)} == {"maria", "li"}


def test_progress_is_per_tenant_and_another_tenants_agent_is_404(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    mine, theirs = _agent(owner), _agent(outsider)
    _say(owner, mine, "hello")
    _say(owner, mine, "zendesk connected")

    other = _say(outsider, theirs, "hello")  # the same user id, another tenant
    assert other["completed_steps"] == []
    assert other["current_step"]["id"] == "connect_helpdesk"
    with nothing_written(owner.tenant, outsider.tenant):
        response = outsider.post(f"{AGENTS}/{mine}/runs", {"user_id": "maria", "message": "done"})
    assert response.status_code == 404
    with tenant_scope(outsider.tenant.pk):
        assert not AgentSession.objects.filter(agent_id=mine).exists()
        assert (
            stalled_users(Agent.unscoped.get(pk=mine), now=timezone.now() + timedelta(days=9)) == []
        )


def test_progress_saves_are_compare_and_set_on_the_revision(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = _agent(owner)
    _say(owner, agent_id, "hello")  # revision 1
    store = DjangoProgressStore(agent_id)
    with tenant_scope(owner.tenant.pk):
        loaded = async_to_sync(store.load)("maria")
        assert loaded is not None
        assert loaded["revision"] == 1
        assert async_to_sync(store.save)("maria", {**loaded, "completed": ["x"]}, revision=1)
        # A writer that loaded revision 1 too is refused, and changes nothing.
        assert not async_to_sync(store.save)("maria", {**loaded, "current": None}, revision=1)
        kept = async_to_sync(store.load)("maria")
        assert kept is not None
        assert (kept["revision"], kept["completed"]) == (2, ["x"])
        assert async_to_sync(store.load)("nobody") is None


def test_two_messages_of_one_user_at_once_lose_no_step(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = _agent(owner)
    _say(owner, agent_id, "hello")
    runs = [
        owner.post(
            f"{AGENTS}/{agent_id}/runs",
            {"user_id": "maria", "message": message},
            headers={"Prefer": "respond-async"},
        ).json()["id"]
        for message in ("zendesk connected", "Which scope does the token need?")
    ]
    for run_id in runs:
        _wait(owner, run_id)
    with tenant_scope(owner.tenant.pk):
        session = AgentSession.objects.get(agent_id=agent_id, user_id="maria")
    assert session.state["onboarding"]["completed"] == ["connect_helpdesk"]
    assert session.state["onboarding"]["revision"] == 3


def _wait(persona: Persona, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if persona.get(f"/api/v1/runs/{run_id}").status_code == 303:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not complete")


def test_the_default_checklist_runs_with_an_empty_config(
    owner: Persona, celery_worker_app: object
) -> None:
    out = _say(owner, _agent(owner, {}), "hi")
    assert out["current_step"]["id"] == "create_api_key"
    assert out["progress"] == {"done": 0, "total": 5}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"steps": []}, "steps"),
        ({"nudge_after_hours": 0}, "nudge_after_hours"),
        (
            {"steps": [{"id": "a", "title": "A", "instructions": "x", "done_when": "maybe"}]},
            "steps[0].done_when",
        ),
        (
            {"steps": [{"id": "a", "title": "A", "instructions": "x", "done_when": ["", "!!"]}]},
            "steps[0].done_when",
        ),
        ({"steps": [{"id": "A b", "title": "A", "instructions": "x"}]}, "steps[0].id"),
        (
            {"steps": [{"id": "a", "title": "A", "instructions": "x", "colour": "red"}]},
            "steps[0].colour",
        ),
        ({"steps": [{"id": "a", "instructions": "x"}]}, "steps[0].title"),
        (
            {
                "steps": [
                    {"id": "a", "title": "A", "instructions": "x"},
                    {"id": "a", "title": "B", "instructions": "y"},
                ]
            },
            "steps[1].id",
        ),
        ({"reminders": True}, "reminders"),
    ],
    ids=[
        "no-steps",
        "nudge",
        "done-when",
        "empty-keywords",
        "id",
        "unknown-step-key",
        "no-title",
        "duplicate",
        "unknown-key",
    ],
)
def test_bad_checklists_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = _create(owner, config)
    assert_field_errors(response, field)
