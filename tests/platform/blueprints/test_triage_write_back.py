"""triage_agent writes its decision back to the ticket (issue 18): through the API on a real
worker, against the local Zendesk and Jira servers that check the real APIs' shapes, at the
``update_ticket`` safety level the tenant chose (safe: written; the default,
requires_confirmation: the run waits until a person approves the update)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow.models import Agent, Run, ToolCall
from governance.services import set_tool_permissions
from hitl.models import HITLRequest
from learning import processing
from learning.services import create_rule
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.builtin_tools.conftest import (
    jira as jira,
)
from tests.platform.builtin_tools.conftest import (
    jira_settings,
    zendesk_settings,
)
from tests.platform.builtin_tools.conftest import (
    operator_allows as operator_allows,
)
from tests.platform.builtin_tools.conftest import (
    zendesk as zendesk,
)
from tests.platform.builtin_tools.fakes import Jira, Zendesk, is_adf
from tests.platform.learning.conftest import make_sender, ticket_payload

pytestmark = pytest.mark.django_db(transaction=True)

OUTAGE = {
    "subject": "Dashboard down for our whole team",
    "message": "Since 9am nobody on our team can open the dashboard, it is down for all of us "
    "and we are losing sales.",
}


def triage_agent(persona: Persona, tool_settings: dict[str, Any], safety: str | None) -> Agent:
    """A triage agent granted ``update_ticket`` (at ``safety``; None: the tool's own)."""
    grant: Any = (
        "update_ticket" if safety is None else {"id": "update_ticket", "safety_level": safety}
    )
    config = {"tools": [grant], "tool_settings": tool_settings}
    response = persona.post(
        "/api/v1/agents", {"name": "triage", "blueprint": "triage_agent", "config": config}
    )
    assert response.status_code == 201, response.content
    agent = Agent.unscoped.get(pk=response.json()["id"])
    set_tool_permissions(actor=ACTOR, agent=agent, grants=[{"tool": "*", "level": "execute"}])
    return agent


def run_ticket(persona: Persona, agent: Agent, **metadata: Any) -> dict[str, Any]:
    response = persona.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {
            "user_id": "zendesk",
            "message": OUTAGE["message"],
            "metadata": {"subject": OUTAGE["subject"], **metadata},
        },
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    assert body["status"] in ("completed", "awaiting_review"), body
    return body


def calls_of(persona: Persona, run_id: str) -> list[ToolCall]:
    with tenant_scope(persona.tenant.pk):
        return list(ToolCall.objects.filter(run_id=run_id))


def wait_for_status(persona: Persona, run_id: str, status: str) -> Run:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with tenant_scope(persona.tenant.pk):
            run = Run.objects.get(pk=run_id)
        if run.status == status:
            return run
        time.sleep(0.1)
    pytest.fail(f"the run stayed {run.status}")


def open_ticket(zendesk: Zendesk, ticket_id: int) -> None:
    zendesk.tickets[ticket_id] = {
        "id": ticket_id,
        "subject": OUTAGE["subject"],
        "status": "new",
        "priority": "normal",
        "tags": ["web_widget", "vip"],
    }


def test_a_safe_update_writes_priority_and_routing_to_the_zendesk_ticket(
    owner: Persona, zendesk: Zendesk, operator_allows: Any, celery_worker_app: object
) -> None:
    operator_allows(zendesk.server.url)
    open_ticket(zendesk, 2001)
    agent = triage_agent(owner, {"zendesk": zendesk_settings(zendesk.server.url)}, "safe")
    run = run_ticket(owner, agent, ticket_id="2001")

    assert run["status"] == "completed"
    output = run["result"]["metadata"]["output"]
    assert (output["category"], output["priority"], output["queue"]) == (
        "technical",
        "critical",
        "incidents",
    )
    assert output["write_back"]["status"] == "written"
    (put,) = zendesk.seen
    assert (put.method, put.path) == ("PUT", "/api/v2/tickets/2001.json")
    ticket = zendesk.tickets[2001]
    assert ticket["priority"] == "urgent"
    # The ticket's own tags are kept; the decision's are added.
    assert ticket["tags"] == ["web_widget", "vip", "category_technical", "queue_incidents"]
    (note,) = ticket["comments"]
    assert note["public"] is False  # an internal note, not a message to the customer
    assert note["body"].startswith("AgentFlow triage: technical / critical -> queue incidents.")
    (call,) = calls_of(owner, run["id"])
    assert (call.tool, call.status, call.step) == ("update_ticket", "ok", "write_back")
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps][-2:] == ["write_back", "report"]


def test_a_jira_update_waits_for_approval_and_runs_once(
    owner: Persona, jira: Jira, operator_allows: Any, celery_worker_app: object
) -> None:
    operator_allows(jira.server.url)
    jira.issues["SUP-7"] = {"summary": OUTAGE["subject"], "labels": ["customer"]}
    agent = triage_agent(owner, {"jira": jira_settings(jira.server.url)}, None)
    run = run_ticket(owner, agent, ticket_id="SUP-7", tier="enterprise")

    assert run["status"] == "awaiting_review"
    assert run["result"]["escalation_reason"] == "ticket update needs approval: update_ticket SUP-7"
    assert jira.seen == []  # proposed, not sent
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
    assert request.kind == "action"
    arguments = request.context["action"]["arguments"]
    assert arguments["ticket_id"] == "SUP-7"
    assert arguments["priority"] == "urgent"

    approve = {"decision": "approve"}
    response = owner.post(f"/api/v1/hitl/queue/{request.pk}/respond", approve)
    assert response.status_code == 200, response.content
    settled = wait_for_status(owner, run["id"], "completed")
    assert (settled.result or {})["review"]["tool_call"]["status"] == "ok"
    issue = jira.issues["SUP-7"]
    assert issue["priority"] == {"name": "Highest"}
    assert issue["labels"] == ["customer", "category_technical", "queue_incidents"]
    assert is_adf(issue["comments"][0]["add"]["body"])
    again = owner.post(f"/api/v1/hitl/queue/{request.pk}/respond", approve)
    assert again.status_code == 409
    time.sleep(0.3)
    assert len(jira.seen) == 1  # written once


def test_a_new_zendesk_ticket_from_the_webhook_rule_is_triaged_and_written_back(
    owner: Persona, zendesk: Zendesk, operator_allows: Any, celery_worker_app: object
) -> None:
    """The demo's rule, "new Zendesk ticket -> triage", end to end: the webhook names the
    ticket (``ticket_key`` zendesk:ticket:2002), the decision lands on that ticket."""
    operator_allows(zendesk.server.url)
    open_ticket(zendesk, 2002)
    agent = triage_agent(owner, {"zendesk": zendesk_settings(zendesk.server.url)}, "safe")
    create_rule(
        actor=ACTOR,
        tenant_id=owner.tenant.pk,
        agent=agent,
        name="new Zendesk ticket -> triage",
        event_kind="zendesk.ticket.created",
    )
    payload = ticket_payload(
        "zendesk", ticket="2002", text="I was charged twice for my subscription this month."
    )
    assert make_sender(owner, "zendesk").deliver(payload).status_code == 202
    processing.drain(owner.tenant.pk)
    deadline = time.monotonic() + 30
    while not (runs := list(Run.unscoped.filter(agent=agent))):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run = wait_for_status(owner, str(runs[0].pk), "completed")
    output = (run.result or {})["metadata"]["output"]
    assert (output["category"], output["priority"], output["queue"]) == (
        "billing",
        "high",
        "billing",
    )
    assert output["write_back"]["status"] == "written"
    ticket = zendesk.tickets[2002]
    assert ticket["priority"] == "high"
    assert "queue_billing" in ticket["tags"]


def test_without_ticket_tools_nothing_is_sent_or_recorded(
    owner: Persona, zendesk: Zendesk, operator_allows: Any, celery_worker_app: object
) -> None:
    operator_allows(zendesk.server.url)
    open_ticket(zendesk, 2001)
    plain = owner.post("/api/v1/agents", {"name": "t", "blueprint": "triage_agent", "config": {}})
    # Settings alone grant nothing: update_ticket must be in tools.
    settings_only = {"tool_settings": {"zendesk": zendesk_settings(zendesk.server.url)}}
    ungranted = owner.post(
        "/api/v1/agents", {"name": "u", "blueprint": "triage_agent", "config": settings_only}
    )
    for created in (plain, ungranted):
        assert created.status_code == 201, created.content
        agent = Agent.unscoped.get(pk=created.json()["id"])
        run = run_ticket(owner, agent, ticket_id="2001")
        assert run["status"] == "completed"
        assert "write_back" not in run["result"]["metadata"]["output"]
        assert calls_of(owner, run["id"]) == []
    assert zendesk.seen == []
    assert zendesk.tickets[2001]["priority"] == "normal"


def test_another_tenant_sees_neither_the_calls_nor_the_agent(
    owner: Persona,
    outsider: Persona,
    zendesk: Zendesk,
    operator_allows: Any,
    celery_worker_app: object,
) -> None:
    operator_allows(zendesk.server.url)
    open_ticket(zendesk, 2001)
    agent = triage_agent(owner, {"zendesk": zendesk_settings(zendesk.server.url)}, "safe")
    run = run_ticket(owner, agent, ticket_id="2001")
    assert outsider.get(f"/api/v1/runs/{run['id']}/tool-calls").status_code == 404
    assert outsider.get(f"/api/v1/agents/{agent.pk}").status_code == 404
    refused = outsider.post(
        f"/api/v1/agents/{agent.pk}/runs", {"user_id": "x", "message": OUTAGE["message"]}
    )
    assert refused.status_code == 404
    with tenant_scope(outsider.tenant.pk):
        assert ToolCall.objects.count() == 0
    assert len(zendesk.seen) == 1  # the owner's one update
