"""triage_agent writes its decision back to the ticket through the run's tool invoker: a real
kernel `ToolRegistry` with an ``update_ticket`` tool that records what it was asked."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from agentflow.kernel.blueprints.base import reply_of
from agentflow.kernel.blueprints.triage import TicketTarget, TriageAgent, ticket_target
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.tools import Tool, ToolCaller, ToolOutcome, ToolRegistry
from tests.kernel.blueprints.test_triage import Tickets

OUTAGE = (
    "Our whole team cannot log in since 9am, the dashboard is down for all of us and we are "
    "losing sales."
)
Safety = Literal["safe", "requires_confirmation", "dangerous"]
ZENDESK = {"base_url": "https://acme.zendesk.example", "email": "bot@acme.example"}


class Invoker:
    """The platform's invoker in miniature: the registry decides, the caller is granted."""

    def __init__(self, safety: Safety = "safe", fail: bool = False) -> None:
        self.updates: list[dict[str, Any]] = []

        async def update_ticket(arguments: dict[str, Any]) -> dict[str, Any]:
            if fail:
                raise RuntimeError("HTTP 404 RecordNotFound")
            self.updates.append(arguments)
            return {"system": "zendesk", "id": arguments["ticket_id"]}

        tool = Tool(
            id="update_ticket",
            handler=update_ticket,
            description="Update a ticket.",
            input_schema={"type": "object"},
            required_permissions="execute",
            safety_level=safety,
        )
        self.registry = ToolRegistry([tool])
        self.caller = ToolCaller.of(["update_ticket"], "execute")
        self.asked: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, tool_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.asked.append((tool_id, arguments))
        return await self.registry.invoke(tool_id, arguments, caller=self.caller)


def agent(systems: dict[str, Any] | None = None, tools: list[str] | None = None) -> TriageAgent:
    config = {
        "tools": ["update_ticket"] if tools is None else tools,
        "tool_settings": {"zendesk": ZENDESK} if systems is None else systems,
    }
    return TriageAgent(config, history=Tickets(), embedder=OfflineEmbedder())


async def run(
    triage: TriageAgent, invoker: Invoker | None, **metadata: Any
) -> tuple[dict[str, Any], Any]:
    context: dict[str, Any] = {"metadata": {"subject": "Dashboard down", **metadata}}
    if invoker is not None:
        context["tool_invoker"] = invoker
    result = await triage.run(OUTAGE, user_id="zendesk", context=context)
    return result.state.plan_state.state["output"], result


async def test_the_decision_is_written_to_the_ticket() -> None:
    invoker = Invoker()
    output, result = await run(agent(), invoker, ticket_id="2001", tier="enterprise")
    assert (output["category"], output["priority"], output["queue"]) == (
        "technical",
        "critical",
        "incidents",
    )
    (update,) = invoker.updates
    assert update["ticket_id"] == "2001"
    assert update["priority"] == "urgent"  # critical, in the ticket system's terms
    assert update["add_tags"] == ["category_technical", "queue_incidents"]
    assert update["comment"].startswith(
        "AgentFlow triage: technical / critical -> queue incidents."
    )
    assert "system" not in update  # one system configured: the tool knows which
    assert output["write_back"] == {
        "system": "zendesk",
        "ticket_id": "2001",
        "priority": "urgent",
        "tags": ["category_technical", "queue_incidents"],
        "status": "written",
    }
    assert [step.node for step in result.plan.path] == [
        "classify",
        "prioritize",
        "route",
        "deduplicate",
        "write_back",
        "report",
    ]
    assert "written to zendesk ticket 2001" in result.state.plan_state.response["content"]


async def test_a_call_that_needs_approval_pauses_with_the_triage_as_proposed_answer() -> None:
    invoker = Invoker(safety="requires_confirmation")
    output, result = await run(agent(), invoker, ticket_key="zendesk:ticket:2001")
    assert invoker.updates == []  # proposed, not run
    assert result.plan.status == "paused"
    assert output["write_back"]["status"] == "awaiting_approval"
    reply = reply_of(result, "zendesk", 0.0)
    assert reply.escalated
    assert reply.escalation_reason == "ticket update needs approval: update_ticket 2001"
    assert reply.proposed_answer == "technical / critical -> queue incidents"


async def test_a_failed_update_still_reports_the_triage() -> None:
    invoker = Invoker(fail=True)
    output, result = await run(agent(), invoker, ticket_id="2001")
    assert result.plan.status == "completed"
    assert output["write_back"]["status"] == "failed"
    assert "RecordNotFound" in output["write_back"]["error"]
    assert output["queue"] == "incidents"


@pytest.mark.parametrize(
    ("systems", "tools", "metadata"),
    [
        ({"zendesk": None, "jira": None}, ["update_ticket"], {"ticket_id": "2001"}),  # no system
        (None, [], {"ticket_id": "2001"}),  # update_ticket not granted
    ],
)
async def test_without_ticket_tools_nothing_changes(
    systems: dict[str, Any] | None, tools: list[str], metadata: dict[str, Any]
) -> None:
    invoker = Invoker()
    output, result = await run(agent(systems, tools), invoker, **metadata)
    assert invoker.asked == []
    assert "write_back" not in output
    assert [step.node for step in result.plan.path][-2:] == ["deduplicate", "report"]


@pytest.mark.parametrize(
    ("systems", "metadata", "invoker", "reason"),
    [
        (None, {}, True, "no ticket id"),
        (None, {"ticket_key": "jira:issue:SUP-7"}, True, "in jira"),
        (
            {"zendesk": ZENDESK, "jira": {"base_url": "https://acme.atlassian.example"}},
            {"ticket_id": "2001"},
            True,
            "metadata.ticket_system",
        ),
        (None, {"ticket_id": "2001"}, False, "no tool invoker"),
    ],
)
async def test_a_ticket_it_cannot_write_to_is_skipped_saying_why(
    systems: dict[str, Any] | None, metadata: dict[str, Any], invoker: bool, reason: str
) -> None:
    given = Invoker() if invoker else None
    output, _ = await run(agent(systems), given, **metadata)
    assert output["write_back"]["status"] == "skipped"
    assert reason in output["write_back"]["reason"]
    assert given is None or given.asked == []


async def test_with_both_systems_the_call_names_the_tickets_system() -> None:
    systems = {"zendesk": ZENDESK, "jira": {"base_url": "https://acme.atlassian.example"}}
    invoker = Invoker()
    await run(agent(systems), invoker, ticket_id="SUP-7", ticket_system="jira")
    assert invoker.updates[0]["system"] == "jira"
    assert invoker.updates[0]["ticket_id"] == "SUP-7"


def test_ticket_targets_of_rules_and_of_the_api() -> None:
    assert ticket_target({"ticket_key": "zendesk:ticket:2001"}) == TicketTarget("zendesk", "2001")
    assert ticket_target({"ticket_key": "jira:issue:SUP-12"}) == TicketTarget("jira", "SUP-12")
    assert ticket_target({"ticket_id": "ZD 1"}) is None  # not an id a ticket tool accepts
    assert ticket_target({"ticket_key": "thread:abc"}) is None
    assert ticket_target({"ticket_id": "42", "ticket_system": "Jira"}) == TicketTarget("jira", "42")
