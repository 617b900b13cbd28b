"""A grant's own price per call (issue 17): how an MCP tool, whose server declares no price,
or a paid API is counted in a run's cost, the cost preflight and the agent's budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agentflow import tooling
from agentflow.models import Agent, ToolCall
from tenants.context import tenant_scope
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.api.test_bad_input import assert_field_errors
from tests.platform.tools.conftest import tool_agent
from tests.platform.tools.test_run_tools import LOOKUP, fsm, settle

pytestmark = pytest.mark.django_db(transaction=True)

PRICED = [{"id": "lookup_order", "cost_per_call": 0.5}, {"id": "refund"}]


def priced_agent(owner: Persona, tools: list[Any]) -> Agent:
    agent = tool_agent(owner, tools=["lookup_order", "refund"])
    config = {**SUPPORT_CONFIG, "tools": tools, "planner": fsm(LOOKUP)}
    response = owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config})
    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    return agent


def test_a_run_pays_the_grants_price(owner: Persona, celery_worker_app: object) -> None:
    agent = priced_agent(owner, PRICED)

    run = settle(owner, agent)

    with tenant_scope(owner.tenant.pk):
        [call] = ToolCall.objects.filter(run_id=run["id"])
    assert call.cost_usd == Decimal("0.5")  # not the tool's own 0.0125
    assert Decimal(run["cost_usd"]) >= Decimal("0.5")


def test_the_preflight_prices_a_granted_mcp_tool(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    config = {
        "tools": [{"id": "lookup_order"}, {"id": "crm.note", "cost_per_call": 0.02}],
    }

    costs = tooling.tool_costs(agent, config)

    assert costs == {"lookup_order": 0.0125, "crm.note": 0.02}


@pytest.mark.parametrize("price", [-0.01, "free", True])
def test_a_bad_price_is_422_and_changes_nothing(owner: Persona, price: Any) -> None:
    agent = priced_agent(owner, PRICED)
    version, stored = agent.version, agent.config["tools"]
    config = {**SUPPORT_CONFIG, "tools": [{"id": "lookup_order", "cost_per_call": price}]}

    response = owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config})

    field = "tools[0].ToolGrantConfig.cost_per_call"
    body = assert_field_errors(response, field)
    assert "number" in str(body["errors"][field]) or "greater than" in str(body["errors"][field])
    agent.refresh_from_db()
    assert agent.version == version
    assert agent.config["tools"] == stored
    assert "cost_per_call" not in stored[1]  # no null price added to a grant that set none
