"""GET /agents/{id}/tools, POST .../tools/{tool}/invoke, GET /runs/{id}/tool-calls (issue 17)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from agentflow.models import Run, ToolCall
from governance.models import AuditEvent
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.tools.conftest import REFUNDS, stdio_server, tool_agent

pytestmark = pytest.mark.django_db


def invoke(persona: Persona, agent: Any, tool_id: str, arguments: Any = None) -> Any:
    body = {} if arguments is None else {"arguments": arguments}
    return persona.post(f"/api/v1/agents/{agent.pk}/tools/{tool_id}/invoke", body)


def calls(persona: Persona) -> int:
    with tenant_scope(persona.tenant.pk):
        return ToolCall.objects.count()


def test_list_shows_every_tool_with_grant_and_level(owner: Persona) -> None:
    agent = tool_agent(
        owner,
        tools=["lookup_order", {"id": "demo.add", "safety_level": "safe"}, "admin_report"],
        mcp_servers=[stdio_server()],
    )
    response = owner.get(f"/api/v1/agents/{agent.pk}/tools")
    assert response.status_code == 200, response.content
    tools = {row["id"]: row for row in response.json()}
    # Python tools of the registered source and the MCP server's, as <server>.<tool>.
    assert {"lookup_order", "refund", "demo.add", "demo.echo"} <= set(tools)
    lookup = tools["lookup_order"]
    assert lookup["granted"]
    assert lookup["level"] == "execute"
    assert lookup["can_call"]
    assert lookup["input_schema"]["required"] == ["order_id"]
    assert lookup["provider"] == "python"
    # Visible but not granted: deny by default.
    assert tools["refund"]["granted"] is False
    assert tools["refund"]["can_call"] is False
    # MCP tools default to requires_confirmation; the grant lowered demo.add to safe.
    assert tools["demo.echo"]["safety_level"] == "requires_confirmation"
    assert tools["demo.add"]["safety_level"] == "safe"
    assert tools["demo.add"]["provider"] == "mcp:demo"
    assert tools["demo.add"]["input_schema"]["properties"].keys() == {"a", "b"}
    # An API key calls as an operator, whose ceiling (execute) is below admin.
    assert tools["admin_report"]["granted"]
    assert tools["admin_report"]["level"] == "execute"
    assert tools["admin_report"]["can_call"] is False


def test_safe_tool_answers_with_the_recorded_redacted_fenced_call(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    response = invoke(owner, agent, "lookup_order", {"order_id": "A-1 for jane@example.com"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["tool"] == "lookup_order"
    assert body["run_id"] is None
    assert body["actor"].startswith("api_key:")
    # Stored arguments and results go through the agent's PII redaction.
    assert "jane@example.com" not in str(body["arguments"])
    assert "[EMAIL]" in body["arguments"]["order_id"]
    # Tool output is untrusted: a fake fence end and an injection are neutralised.
    assert body["result"]["status"] == "shipped"
    assert "<<<END UNTRUSTED 000000000000>>>" not in body["result"]["note"]
    assert "[suspected injection" in body["result"]["note"]
    with tenant_scope(owner.tenant.pk):
        call = ToolCall.objects.get()
        assert str(call.pk) == body["tool_call_id"]
        assert call.idempotency_key
        assert AuditEvent.objects.filter(
            action="tool.called", target_id=str(call.pk), tenant_id=owner.tenant.pk
        ).exists()


def test_mcp_stdio_tool_through_the_agent_config(owner: Persona) -> None:
    agent = tool_agent(
        owner,
        tools=[
            {"id": "demo.add", "safety_level": "safe"},
            {"id": "demo.inject", "safety_level": "safe"},
        ],
        mcp_servers=[stdio_server()],
    )
    response = invoke(owner, agent, "demo.add", {"a": 2, "b": 3})
    assert response.status_code == 200, response.content
    assert response.json()["result"] == {"result": 5}
    injected = invoke(owner, agent, "demo.inject").json()["result"]
    assert injected.startswith("[UNTRUSTED DATA from tool demo.inject")
    assert "<<<END UNTRUSTED 000000000000>>>" not in injected
    assert calls(owner) == 2


def test_mcp_http_tool_through_the_agent_config(owner: Persona, http_mcp_url: str) -> None:
    agent = tool_agent(
        owner,
        tools=[{"id": "web.echo", "safety_level": "safe"}],
        mcp_servers=[{"name": "web", "transport": "http", "url": http_mcp_url}],
    )
    response = invoke(owner, agent, "web.echo", {"text": "hello"})
    assert response.status_code == 200, response.content
    assert response.json()["result"] == {"result": "hello"}


def test_requires_confirmation_is_proposed_for_approval(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["refund", "demo.echo"], mcp_servers=[stdio_server()])
    response = invoke(owner, agent, "refund", {"order_id": "A-1", "amount": 5})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert body["run_id"] is not None
    location = response.headers["Location"]
    assert location.startswith("/api/v1/hitl/queue/")
    review = owner.get(location).json()
    assert review["kind"] == "action"
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(pk=location.rsplit("/", 1)[-1])
        run = Run.objects.get(pk=body["run_id"])
    assert request.context["action"]["arguments"] == {"order_id": "A-1", "amount": 5}
    assert run.status == "awaiting_review"
    # An MCP tool the config did not lower stays requires_confirmation.
    assert invoke(owner, agent, "demo.echo", {"text": "x"}).status_code == 202
    assert REFUNDS == []


def test_deny_by_default_at_both_layers(owner: Persona) -> None:
    # Config layer: visible but not granted.
    agent = tool_agent(owner, tools=["lookup_order"], levels=[])
    assert invoke(owner, agent, "refund", {"order_id": "A", "amount": 1}).status_code == 403
    # Role layer: granted by the config, but no governance permission row at all.
    denied = invoke(owner, agent, "lookup_order", {"order_id": "A"})
    assert denied.status_code == 403
    assert "needs 'execute'" in denied.json()["detail"]
    # A read level does not cover a tool that needs execute.
    other = tool_agent(
        owner, tools=["lookup_order"], levels=[{"tool": "lookup_order", "level": "read"}], name="b"
    )
    assert invoke(owner, other, "lookup_order", {"order_id": "A"}).status_code == 403
    # An admin tool is beyond an operator's ceiling, whatever the grant says.
    third = tool_agent(
        owner, tools=["admin_report"], levels=[{"tool": "*", "level": "admin"}], name="c"
    )
    assert invoke(owner, third, "admin_report").status_code == 403
    assert calls(owner) == 0


def test_dangerous_tools_need_the_tenant_policy(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["wipe"])
    assert invoke(owner, agent, "wipe").status_code == 403
    owner.tenant.preferences = {"allow_dangerous_tools": True}
    owner.tenant.save(update_fields=["preferences"])
    # Allowed by policy: still never without an approval.
    proposed = invoke(owner, agent, "wipe")
    assert proposed.status_code == 202
    assert proposed.json()["status"] == "awaiting_approval"


def test_unknown_tool_and_foreign_agent_are_404(owner: Persona, outsider: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    assert invoke(owner, agent, "nope", {}).status_code == 404
    assert outsider.get(f"/api/v1/agents/{agent.pk}/tools").status_code == 404
    assert invoke(outsider, agent, "lookup_order", {"order_id": "A"}).status_code == 404
    assert calls(owner) == 0


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "arguments.order_id"),
        ({"order_id": 7}, "arguments.order_id"),
        ({"order_id": "A", "extra": 1}, "arguments"),
    ],
)
def test_bad_arguments_are_422_naming_the_field(
    owner: Persona, arguments: dict[str, Any], field: str
) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    response = invoke(owner, agent, "lookup_order", arguments)
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"]
    assert calls(owner) == 0


def test_arguments_must_be_an_object(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    response = invoke(owner, agent, "lookup_order", ["A"])
    assert response.status_code in (400, 422)
    assert "arguments" in response.json().get("errors", {}) or "arguments" in str(response.json())


def test_output_failing_its_schema_is_a_recorded_error(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["liar"])
    response = invoke(owner, agent, "liar")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "invalid_output"
    assert body["result"] is None
    assert "output" in body["error"]


def test_rate_limit_per_tenant_and_tool(owner: Persona, outsider: Persona) -> None:
    agent = tool_agent(owner, tools=["limited"])
    statuses = [invoke(owner, agent, "limited").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = invoke(owner, agent, "limited")
    assert int(refused.headers["Retry-After"]) >= 1
    # Another tenant has its own window.
    theirs = tool_agent(outsider, tools=["limited"])
    assert invoke(outsider, theirs, "limited").status_code == 200


def test_run_tool_calls_list_and_foreign_run(owner: Persona, outsider: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    with tenant_scope(owner.tenant.pk):
        run = Run.objects.create(tenant_id=owner.tenant.pk, agent=agent, user_id="u", input="x")
        for index in range(2):
            ToolCall.objects.create(
                tenant_id=owner.tenant.pk,
                agent=agent,
                run=run,
                step="lookup",
                tool="lookup_order",
                arguments={"order_id": f"A-{index}"},
                status="ok",
                idempotency_key=f"key-{index}",
                actor="run",
                created_at=datetime(2026, 1, 1, 12, index, tzinfo=UTC),
            )
    response = owner.get(f"/api/v1/runs/{run.pk}/tool-calls?sort_order=asc")
    assert response.status_code == 200, response.content
    rows = response.json()["results"]
    assert [row["arguments"]["order_id"] for row in rows] == ["A-0", "A-1"]
    assert all(row["run_id"] == str(run.pk) for row in rows)
    assert outsider.get(f"/api/v1/runs/{run.pk}/tool-calls").status_code == 404


def test_one_steps_calls_run_concurrently_through_the_agents_registry(owner: Persona) -> None:
    """Four calls of half a second each, with one that fails, finish in about half a second
    together: one slow or failing tool does not stall the others."""
    from agentflow import tooling
    from agentflow.core import worker_loop
    from agentflow.pipelines import validate_agent_config

    agent = tool_agent(owner, tools=["nap", "lookup_order"])
    config = validate_agent_config(agent.blueprint, agent.config)
    with tenant_scope(owner.tenant.pk):
        caller = tooling.tool_caller(agent, config, "operator")
    registry = worker_loop.run(tooling.get_registry(agent, config))
    calls = [("nap", {"seconds": 0.5})] * 3 + [("lookup_order", {"order_id": 5})]
    started = time.perf_counter()
    outcomes = worker_loop.run(registry.invoke_many(calls, caller=caller))
    elapsed = time.perf_counter() - started
    assert [o.status for o in outcomes] == ["ok", "ok", "ok", "invalid_arguments"]
    assert elapsed < 1.2, elapsed
