"""triage_agent through the API on a real worker: config checks, runs, duplicates, isolation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow.models import Agent, Run
from learning import processing
from learning.models import ActivityEvent
from learning.services import create_rule
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written
from tests.platform.learning.conftest import make_sender, ticket_payload

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"
WIDGET_DOWN = {
    "subject": "Checkout widget down on our store",
    "message": "The embedded checkout widget is not loading on our store at all - customers "
    "see a blank box. We are losing orders every minute.",
}
WIDGET_AGAIN = {
    "subject": "Checkout widget not loading",
    "message": "Our store checkout widget is not loading, customers just see an empty box "
    "instead of the payment form.",
}


def create(persona: Persona, config: dict[str, Any] | None = None, name: str = "triage") -> Any:
    body = {"name": name, "blueprint": "triage_agent", "config": config or {}}
    return persona.post(AGENTS, body)


def ticket(persona: Persona, agent_id: str, text: dict[str, str], **metadata: Any) -> Any:
    response = persona.post(
        f"{AGENTS}/{agent_id}/runs",
        {
            "user_id": "zendesk",
            "message": text["message"],
            "metadata": {"subject": text["subject"], **metadata},
        },
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_the_blueprint_is_listed_with_its_schema_and_defaults(owner: Persona) -> None:
    listed = {b["name"]: b for b in owner.get("/api/v1/blueprints").json()["results"]}
    triage = listed["triage_agent"]
    assert "routing_rules" in triage["config_schema"]["properties"]
    assert triage["default_config"]["default_queue"] == "general"
    assert {"classify", "route", "deduplicate"} <= set(
        triage["default_planner"]["definition"]["states"]
    )
    created = create(owner)
    assert created.status_code == 201, created.json()
    assert created.json()["config"]["duplicate_threshold"] == 0.6


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"routing_rules": [{"category": "refunds", "queue": "x"}]}, "routing_rules[0].category"),
        ({"routing_rules": [{"priority": "urgent", "queue": "x"}]}, "routing_rules[0].priority"),
        ({"routing_rules": [{"category": "billing"}]}, "routing_rules[0].queue"),
        ({"duplicate_threshold": 1.5}, "duplicate_threshold"),
        ({"categories": []}, "categories"),
        (
            {"categories": [{"name": "a", "keywords": ["x"]}, {"name": "a", "keywords": ["y"]}]},
            "categories[1].name",
        ),
        ({"tier_boost": {"enterprise": 9}}, "tier_boost.enterprise"),
        ({"queue": "billing"}, "queue"),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(create(owner, config), field)


def test_a_ticket_is_triaged_end_to_end_and_a_reworded_one_is_its_duplicate(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = create(owner).json()["id"]
    first = ticket(owner, agent_id, WIDGET_DOWN, tier="premium", ticket_id="ZD-100")
    assert first["status"] == "completed"
    output = first["result"]["metadata"]["output"]
    assert (output["category"], output["priority"], output["queue"]) == (
        "technical",
        "critical",
        "incidents",
    )
    assert output["duplicates"] == []
    assert first["result"]["intent"] == "technical"

    second = ticket(owner, agent_id, WIDGET_AGAIN, ticket_id="ZD-140")
    output = second["result"]["metadata"]["output"]
    assert output["duplicate_of"] == first["id"]
    assert output["duplicates"][0]["ticket_id"] == "ZD-100"
    assert f"possible duplicate of run {first['id']}" in second["result"]["content"]

    steps = owner.get(f"/api/v1/runs/{second['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == [
        "classify",
        "prioritize",
        "route",
        "deduplicate",
        "report",
    ]


def test_the_tenants_routing_rules_route_its_tickets(
    owner: Persona, celery_worker_app: object
) -> None:
    rules = {
        "routing_rules": [
            {"keywords": ["checkout"], "priority": "critical", "queue": "payments-oncall"},
            {"category": "technical", "queue": "tier2"},
        ],
        "default_queue": "inbox",
    }
    agent_id = create(owner, rules).json()["id"]
    output = ticket(owner, agent_id, WIDGET_DOWN)["result"]["metadata"]["output"]
    assert (output["queue"], output["routing_rule"]) == ("payments-oncall", 0)
    question = {"subject": "Do you ship to Canada?", "message": "Do you ship to Canada?"}
    output = ticket(owner, agent_id, question)["result"]["metadata"]["output"]
    assert output["queue"] == "inbox"


def test_tenants_never_see_each_others_tickets_or_agents(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    owners = create(owner).json()["id"]
    ticket(owner, owners, WIDGET_DOWN, ticket_id="ZD-100")

    assert outsider.get(f"{AGENTS}/{owners}").status_code == 404
    with nothing_written(owner.tenant, outsider.tenant):
        refused = outsider.post(f"{AGENTS}/{owners}/runs", {"user_id": "zendesk", "message": "hi"})
    assert refused.status_code == 404

    theirs = create(outsider).json()["id"]
    output = ticket(outsider, theirs, WIDGET_AGAIN)["result"]["metadata"]["output"]
    assert output["duplicates"] == []  # the owner's identical ticket is not theirs
    with tenant_scope(outsider.tenant.pk):
        assert Run.objects.count() == 1
        assert Agent.objects.count() == 1


def test_a_new_zendesk_ticket_is_triaged_through_a_tenant_rule(
    owner: Persona, celery_worker_app: object
) -> None:
    """The demo's rule, "new Zendesk ticket -> triage": the webhook's text reaches the agent
    fenced as untrusted data, its subject and key as run metadata."""
    agent = Agent.unscoped.get(pk=create(owner).json()["id"])
    create_rule(
        actor=ACTOR,
        tenant_id=owner.tenant.pk,
        agent=agent,
        name="new Zendesk ticket -> triage",
        event_kind="zendesk.ticket.created",
    )
    payload = ticket_payload(
        "zendesk",
        ticket="2001",
        text="Since this morning nobody on our team can log in, SSO returns a SAML error.",
    )
    payload["detail"]["subject"] = "SSO login broken for everyone"
    assert make_sender(owner, "zendesk").deliver(payload).status_code == 202
    processing.drain(owner.tenant.pk)  # (or the worker's stream consumer, first)
    deadline = time.monotonic() + 30
    while not (runs := list(Run.unscoped.filter(agent=agent))):
        assert time.monotonic() < deadline, list(ActivityEvent.unscoped.values("kind", "outcome"))
        time.sleep(0.1)
    (run,) = runs
    assert run.metadata["ticket_key"] == "zendesk:ticket:2001"
    while (body := owner.get(f"/api/v1/runs/{run.pk}/result")).status_code != 200:
        assert time.monotonic() < deadline, body.json()
        time.sleep(0.1)
    output = body.json()["result"]["metadata"]["output"]
    assert (output["category"], output["priority"], output["queue"]) == (
        "account",
        "critical",
        "accounts",
    )
