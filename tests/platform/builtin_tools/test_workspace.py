"""``knowledge_search`` and ``handoff_to_human`` on real Postgres: each agent sees its own
tenant's data only, and a hand-off queues a real review request for the run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agentflow import knowledge
from agentflow.models import Agent, AgentSession, Message, Run, RunStatus
from hitl.models import HITLRequest, Kind
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent
from tests.platform.builtin_tools.conftest import granted, registry_for
from tests.platform.hitl.conftest import make_member

pytestmark = pytest.mark.django_db(transaction=True)


def tools_of(agent: Agent) -> Any:
    return registry_for({}, tenant_id=agent.tenant_id, agent_id=str(agent.pk))


@pytest.fixture
def two_agents(owner: Persona, outsider: Persona) -> tuple[Agent, Agent]:
    ours = make_agent(owner)
    theirs = make_agent(outsider, name="globex-bot")
    with tenant_scope(outsider.tenant.pk):
        knowledge.ingest_document(
            agent=theirs,
            title="Globex secret pricing",
            content_type="text/markdown",
            text="Globex refunds are issued in gold bars within 5 business days.",
        )
    return ours, theirs


async def test_knowledge_search_finds_the_agents_own_passages(
    two_agents: tuple[Agent, Agent],
) -> None:
    ours, _ = two_agents
    registry = tools_of(ours)
    outcome = await registry.invoke(
        "knowledge_search", {"query": "how do I get a refund", "limit": 2},
        caller=granted(registry, "read"),
    )  # fmt: skip
    assert outcome.ok, outcome
    results = outcome.output["results"]
    assert results[0]["title"] == "Refunds"
    assert "original card" in results[0]["text"]
    assert 0 < results[0]["score"] <= 1
    assert len(results) == 2


async def test_knowledge_search_never_crosses_tenants(two_agents: tuple[Agent, Agent]) -> None:
    ours, theirs = two_agents
    query = {"query": "Globex refunds gold bars pricing", "limit": 20}
    mine = await tools_of(ours).invoke("knowledge_search", query, caller=granted(tools_of(ours)))
    assert mine.ok, mine
    assert mine.output["results"]  # our own passages, however poor the match
    assert all("Globex" not in hit["title"] + hit["text"] for hit in mine.output["results"])
    foreign = registry_for({}, tenant_id=ours.tenant_id, agent_id=str(theirs.pk))
    refused = await foreign.invoke("knowledge_search", query, caller=granted(foreign))
    assert refused.status == "error"
    assert "agent does not exist" in (refused.error or "")
    theirs_found = await tools_of(theirs).invoke(
        "knowledge_search", query, caller=granted(tools_of(theirs))
    )
    assert theirs_found.output["results"][0]["title"] == "Globex secret pricing"


async def test_knowledge_search_arguments_are_checked(two_agents: tuple[Agent, Agent]) -> None:
    registry = tools_of(two_agents[0])
    for arguments, field in (({"query": ""}, "$.query"), ({"query": "x", "limit": 500}, "$.limit")):
        outcome = await registry.invoke("knowledge_search", arguments, caller=granted(registry))
        assert outcome.status == "invalid_arguments"
        assert field in (outcome.error or "")


# ----------------------------------------------------------------------------- hand-off


def processing_run(agent: Agent) -> Run:
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer-1")
        return Run.objects.create(
            agent=agent,
            session=session,
            user_id="customer-1",
            input="I was charged twice and nobody answers",
            status=RunStatus.PROCESSING,
        )


def requests_of(run: Run) -> list[HITLRequest]:
    return list(HITLRequest.unscoped.filter(run=run))


async def test_handoff_queues_a_review_request_for_the_run(owner: Persona) -> None:
    agent = await sync_to_async(make_agent)(owner)
    run = await sync_to_async(processing_run)(agent)
    registry = tools_of(agent)
    arguments = {"run_id": str(run.pk), "reason": "Customer asks for a person", "priority": "high"}
    outcome = await registry.invoke("handoff_to_human", arguments, caller=granted(registry))
    assert outcome.ok, outcome
    [request] = await sync_to_async(requests_of)(run)
    assert outcome.output["request_id"] == str(request.pk)
    assert outcome.output["status"] == "queued"
    assert (request.kind, request.priority) == (Kind.MANUAL, "high")
    assert request.escalation_reason == "Customer asks for a person"
    assert request.context["after_the_fact"] is True  # the run goes on with its own reply
    assert request.proposed_answer == ""  # nothing to approve: a human writes the answer
    again = await registry.invoke("handoff_to_human", arguments, caller=granted(registry))
    assert again.ok, again
    assert again.output == {**outcome.output, "status": "already_in_review"}
    assert len(await sync_to_async(requests_of)(run)) == 1


def finish_and_decide(run: Run, request_id: str, owner: Persona) -> tuple[Any, list[str]]:
    """The run settles with its own reply; then an operator answers the hand-off in the
    queue, through the API."""
    with tenant_scope(run.tenant_id):
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.COMPLETED, result={"content": "A colleague will get back to you."}
        )
    operator = make_member(owner.tenant, "otto", "operator")
    answer = "Hi, Otto here: I refunded the second charge."
    response = operator.respond(request_id, decision="edit", response=answer)
    with tenant_scope(run.tenant_id):
        said = list(
            Message.objects.filter(session_id=run.session_id).values_list("content", flat=True)
        )
    return response, said


async def test_a_handed_off_run_gets_the_humans_answer(owner: Persona) -> None:
    agent = await sync_to_async(make_agent)(owner)
    run = await sync_to_async(processing_run)(agent)
    registry = tools_of(agent)
    outcome = await registry.invoke(
        "handoff_to_human", {"run_id": str(run.pk), "reason": "Asked for a person"},
        caller=granted(registry),
    )  # fmt: skip
    assert outcome.ok, outcome
    response, said = await sync_to_async(finish_and_decide)(
        run, outcome.output["request_id"], owner
    )
    assert response.status_code == 200, response.content
    assert said == ["Hi, Otto here: I refunded the second charge."]
    [request] = await sync_to_async(requests_of)(run)
    assert (request.status, request.decision) == ("edited", "edit")


async def test_handoff_refuses_runs_of_other_agents_and_tenants(
    owner: Persona, outsider: Persona
) -> None:
    agent = await sync_to_async(make_agent)(owner)
    other = await sync_to_async(make_agent)(outsider, "globex-bot")
    foreign_run = await sync_to_async(processing_run)(other)
    registry = tools_of(agent)
    for run_id in (str(foreign_run.pk), str(uuid.uuid4())):
        outcome = await registry.invoke(
            "handoff_to_human", {"run_id": run_id, "reason": "help"}, caller=granted(registry)
        )
        assert outcome.status == "error"
        assert "no run" in (outcome.error or "")
    bad = await registry.invoke(
        "handoff_to_human", {"run_id": "not-a-uuid", "reason": "help"}, caller=granted(registry)
    )
    assert bad.status == "invalid_arguments"
    assert "$.run_id" in (bad.error or "")
    assert await sync_to_async(requests_of)(foreign_run) == []
