"""Internal events join the stream: runs settling, HITL decisions; and the activity API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import TestCase

from agentflow import services as run_services
from agentflow.models import Agent, AgentSession, Run
from learning import activity, processing, services
from learning.models import ActivityEvent, GraphNode
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, assert_field_errors
from tests.platform.learning.conftest import make_sender, ticket_payload

ACTIVITY = "/api/v1/activity"


def _execute(agent: Agent, message: str, user_id: str = "customer-1") -> Run:
    """A real run through the offline pipeline in this thread (no worker needed)."""
    with tenant_scope(agent.tenant_id), TestCase.captureOnCommitCallbacks(execute=True):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id=user_id)
        run = Run.objects.create(agent=agent, session=session, user_id=user_id, input=message)
        run_services.execute_run(str(run.pk))
        run.refresh_from_db()
    return run


def _events(persona: Persona, kind: str) -> list[ActivityEvent]:
    return list(ActivityEvent.unscoped.filter(tenant=persona.tenant, kind=kind))


# The pipeline's stores answer from other threads: they must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_completed_run_becomes_an_event_and_part_of_the_graph(
    owner: Persona, agent: Agent
) -> None:
    run = _execute(agent, "How do I reset my password?")
    assert run.status == "completed", run.result
    (event,) = _events(owner, "run.completed")
    assert event.source == "internal"
    # Published on the transition's commit.
    assert activity.client().xlen(activity.stream_key(owner.tenant.pk)) == 1
    payload: dict[str, Any] = event.payload
    assert payload["run_id"] == str(run.pk)
    assert payload["intent"] == "PASSWORD_RESET"
    assert payload["agent_name"] == "support"
    assert payload["sources"]
    assert payload["sources"][0]["kind"] == "knowledge"
    processing.drain(owner.tenant.pk)
    nodes = dict(
        GraphNode.unscoped.filter(tenant=owner.tenant).values_list("kind", "key").order_by("kind")
    )
    assert nodes["customer"] == "api:user:customer-1"
    assert nodes["resolution"] == f"run:{run.pk}"
    assert nodes["agent"] == f"agent:{agent.pk}"
    assert nodes["article"].startswith("knowledge:")


@pytest.mark.django_db(transaction=True)
def test_an_escalation_and_its_review_are_events(owner: Persona, agent: Agent) -> None:
    run = _execute(agent, "I want to talk to a human")
    assert run.status == "awaiting_review"
    assert len(_events(owner, "run.escalated")) == 1
    queue = owner.get("/api/v1/hitl/queue").json()["results"]
    with TestCase.captureOnCommitCallbacks(execute=True):
        decided = owner.post(
            f"/api/v1/hitl/queue/{queue[0]['id']}/respond",
            {"decision": "edit", "response": "A colleague will call you today."},
        )
    assert decided.status_code == 200, decided.content
    (completed,) = _events(owner, "run.completed")
    assert completed.payload["review"] == "edit"
    (review,) = _events(owner, "hitl.decided")
    assert review.payload == {
        "request_id": queue[0]["id"],
        "run_id": str(run.pk),
        "decision": "edit",
        "status": "edited",
        "intent": "HUMAN_AGENT",
        "priority": review.payload["priority"],
        "decided_by": None,
    }
    processing.drain(owner.tenant.pk)
    resolution = GraphNode.unscoped.get(tenant=owner.tenant, key=f"run:{run.pk}")
    assert resolution.properties["review"] == "edit"


def test_recording_with_a_dedup_key_is_idempotent(owner: Persona) -> None:
    first = services.record_event(
        owner.tenant.pk, "golden_path.created", {"run_id": "r"}, dedup_key="gp-1"
    )
    again = services.record_event(
        owner.tenant.pk, "golden_path.created", {"run_id": "r"}, dedup_key="gp-1"
    )
    assert first.pk == again.pk
    assert len(_events(owner, "golden_path.created")) == 1


# --- the activity API -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_activity_list_filters_and_pages(owner: Persona, agent: Agent) -> None:
    sender = make_sender(owner, "zendesk")
    for n in range(3):
        sender.deliver(ticket_payload("zendesk", ticket=str(n)), delivery_id=f"d{n}")
    _execute(agent, "How do I reset my password?")
    everything = owner.get(ACTIVITY).json()
    assert everything["total"] == 4
    assert {"payload", "stream_id"}.isdisjoint(everything["results"][0])  # detail only
    zendesk = owner.get(f"{ACTIVITY}?kind=zendesk.*&limit=2&sort_order=asc").json()
    assert (zendesk["total"], len(zendesk["results"]), zendesk["has_more"]) == (3, 2, True)
    assert owner.get(f"{ACTIVITY}?source=internal").json()["total"] == 1
    assert owner.get(f"{ACTIVITY}?processed=false").json()["total"] == 4
    processing.drain(owner.tenant.pk)
    assert owner.get(f"{ACTIVITY}?processed=true").json()["total"] == 4
    assert owner.get(f"{ACTIVITY}?since=2999-01-01T00:00:00Z").json()["total"] == 0
    for bad, field in (
        ("source=fax", "source"),
        ("processed=maybe", "processed"),
        ("since=yesterday", "since"),
        ("kind=a*b*", "kind"),
    ):
        assert_field_errors(owner.get(f"{ACTIVITY}?{bad}"), field)


def test_an_event_in_detail_with_its_delivery(owner: Persona, outsider: Persona) -> None:
    response = make_sender(owner, "jira").deliver(
        ticket_payload("jira"), delivery_id="jira-9", retry=None
    )
    event_id = response.json()["event_id"]
    detail = owner.get(f"{ACTIVITY}/{event_id}").json()
    assert detail["kind"] == "jira.issue_created"
    assert detail["payload"]["issue"]["key"] == "SUP-1001"
    assert detail["delivery"]["delivery_id"] == "jira-9"
    assert detail["delivery"]["attempts"] == 1
    assert detail["processed_at"] is None
    processing.drain(outsider.tenant.pk)  # another tenant's drain leaves it alone
    assert owner.get(f"{ACTIVITY}/{event_id}").json()["processed_at"] is None
    assert_error(outsider.get(f"{ACTIVITY}/{event_id}"), 404, "not_found")


def test_no_signal_receiver_sits_on_the_run_path() -> None:
    """Issue 14: a run's settling reaches the activity stream by the transition's direct
    call (agentflow.services.transition), not through a post_save receiver."""
    from django.db.models.signals import post_save

    from agentflow.models import Run, RunTransition

    assert not post_save.has_listeners(RunTransition)
    assert not post_save.has_listeners(Run)
