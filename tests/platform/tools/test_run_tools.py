"""Runs call tools (issue 17): a planner's tool state goes through the agent's registry,
each call is a ToolCall of the run, its price counts in the run's cost. A real Celery worker
runs the runs."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from agentflow.models import Run, ToolCall
from tenants.context import tenant_scope
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.tools.conftest import tool_agent

pytestmark = pytest.mark.django_db(transaction=True)


def fsm(tool_action: str) -> dict[str, Any]:
    plan = f"""\
initial_state: classify
final_states: [deliver, human_review]
states:
  classify:
    on_success: act
    on_error: human_review
  act:
    action: {tool_action}
    on_success: generate_response
    on_error: human_review
  generate_response:
    on_success: evaluate
    on_error: human_review
  evaluate:
    condition: "response.confidence >= 0.0"
    on_true: deliver
    on_false: human_review
"""
    return {"type": "fsm", "definition": plan}


LOOKUP = "{tool: lookup_order, arguments: {order_id: \"'A-' + 'jane@example.com'\"}}"
REFUND = '{tool: refund, arguments: {order_id: "\'A-42\'", amount: "120.5"}}'


def planned_agent(owner: Persona, action: str, **kwargs: Any) -> Any:
    agent = tool_agent(owner, tools=["lookup_order", "refund"], **kwargs)
    response = owner.patch(
        f"/api/v1/agents/{agent.pk}",
        {"config": {**SUPPORT_CONFIG, "tools": ["lookup_order", "refund"], "planner": fsm(action)}},
    )
    assert response.status_code == 200, response.content
    return agent


def settle(owner: Persona, agent: Any) -> dict[str, Any]:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "tool-user", "message": "Where is my order?"},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code in (201, 202), response.content
    run_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with tenant_scope(owner.tenant.pk):
            run = Run.objects.get(pk=run_id)
        if run.status in ("completed", "awaiting_review", "failed"):
            return {"id": run_id, "status": run.status, "cost_usd": str(run.cost_usd)}
        time.sleep(0.2)
    pytest.fail("the run did not settle")


def tool_calls(owner: Persona, run_id: str) -> list[dict[str, Any]]:
    response = owner.get(f"/api/v1/runs/{run_id}/tool-calls?sort_order=asc")
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def test_a_tool_state_calls_the_tool_and_records_it(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = planned_agent(owner, LOOKUP)
    run = settle(owner, agent)
    assert run["status"] == "completed", run
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    act = next(step for step in steps if step["node"] == "act")
    assert act["outcome"] == "success"
    assert act["action"] == "tool:lookup_order"
    [call] = tool_calls(owner, run["id"])
    assert call["tool"] == "lookup_order"
    assert call["step"] == "act"  # the plan's state that made the call
    assert call["status"] == "ok"
    assert call["actor"] == "run"
    assert call["result"]["status"] == "shipped"
    assert "jane@example.com" not in call["arguments"]["order_id"]  # redacted when stored
    # The tool's price is part of the run's cost.
    assert Decimal(run["cost_usd"]) >= Decimal("0.0125")


def test_a_call_needing_approval_pauses_the_run_for_review(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = planned_agent(owner, REFUND)
    run = settle(owner, agent)
    assert run["status"] == "awaiting_review", run
    [call] = tool_calls(owner, run["id"])
    assert call["tool"] == "refund"
    assert call["status"] == "awaiting_approval"
    assert call["finished_at"] is None
    with tenant_scope(owner.tenant.pk):
        stored = ToolCall.objects.get(pk=call["tool_call_id"])
        # What approving executes: the exact arguments the plan proposed.
        assert stored.pending_arguments == {"order_id": "A-42", "amount": 120.5}


def test_a_denied_tool_takes_the_error_branch_and_runs_nothing(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = planned_agent(owner, LOOKUP, levels=[])  # granted by config, no role level
    run = settle(owner, agent)
    assert run["status"] == "awaiting_review", run
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    act = next(step for step in steps if step["node"] == "act")
    assert act["outcome"] != "success"
    assert "needs 'execute'" in (act.get("error") or str(act))
    assert tool_calls(owner, run["id"]) == []


def test_a_plan_may_call_only_granted_tools(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["lookup_order"])
    response = owner.patch(
        f"/api/v1/agents/{agent.pk}",
        {"config": {**SUPPORT_CONFIG, "tools": ["lookup_order"], "planner": fsm(REFUND)}},
    )
    assert response.status_code == 422
    assert "planner.definition" in response.json()["errors"]


def test_the_preflight_prices_the_plans_tool_calls(owner: Persona) -> None:
    agent = planned_agent(owner, LOOKUP)
    response = owner.post(f"/api/v1/agents/{agent.pk}/preflight", {"message": "Where is it?"})
    assert response.status_code == 200, response.content
    body = response.json()
    act = next(step for step in body["steps"] if step["node"] == "act")
    assert act["usd"] == pytest.approx(0.0125)
    assert body["max_usd"] >= 0.0125
