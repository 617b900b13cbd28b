"""StepAgent blueprints call tools (issue 18): a code review whose tenant planner has a tool
state calls it through the run's invoker, the call is a ToolCall of the run, its price is
the run's, and a call that needs approval pauses the run into an action review. A real
Celery worker runs the runs; the tools are the registered Python tools of this package."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from agentflow.models import Agent, Run, ToolCall
from governance.services import set_tool_permissions
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.api.test_bad_input import nothing_written
from tests.platform.tools.conftest import REFUNDS
from tests.platform.tools.test_run_tools import tool_calls

pytestmark = pytest.mark.django_db(transaction=True)

DIFF = """\
diff --git a/app/export.py b/app/export.py
--- a/app/export.py
+++ b/app/export.py
@@ -1,2 +1,3 @@
 import os
+cursor.execute(f"SELECT * FROM invoices WHERE customer = {customer_id}")
 print("done")
"""


def review_plan(action: str) -> dict[str, Any]:
    """parse -> <the tool> -> scan -> report: the code review with a tool state inside."""
    plan = f"""\
initial_state: parse
final_states: [report, not_a_diff]
states:
  parse:
    on_success: act
    on_error: not_a_diff
  act:
    action: {action}
    on_success: scan
    on_error: report
  scan:
    on_success: report
"""
    return {"type": "fsm", "definition": plan}


LOOKUP = "{tool: lookup_order, arguments: {order_id: \"'A-7'\"}}"
REFUND = '{tool: refund, arguments: {order_id: "\'A-42\'", amount: "120.5"}}'


def reviewer(owner: Persona, action: str, tools: list[Any]) -> str:
    response = owner.post(
        "/api/v1/agents",
        {
            "name": "reviewer",
            "blueprint": "code_review_agent",
            "config": {"tools": tools, "planner": review_plan(action)},
        },
    )
    assert response.status_code == 201, response.content
    agent = Agent.unscoped.get(pk=response.json()["id"])
    set_tool_permissions(actor=ACTOR, agent=agent, grants=[{"tool": "*", "level": "execute"}])
    return str(agent.pk)


def run_diff(owner: Persona, agent_id: str) -> dict[str, Any]:
    response = owner.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": "ci-bot", "message": DIFF},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code in (201, 202), response.content
    run_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with tenant_scope(owner.tenant.pk):
            run = Run.objects.get(pk=run_id)
        if run.status in ("completed", "awaiting_review", "failed"):
            return {"id": run_id, "status": run.status, "run": run}
        time.sleep(0.2)
    pytest.fail("the run did not settle")


def test_a_tool_state_of_a_blueprint_plan_is_a_tool_call_of_the_run(
    owner: Persona, celery_worker_app: object
) -> None:
    agent_id = reviewer(owner, LOOKUP, ["lookup_order"])
    settled = run_diff(owner, agent_id)
    run = settled["run"]
    # The review still did its work after the tool ran: a high finding goes to a person.
    assert (run.result or {})["escalation_reason"] == "risky_change"
    (call,) = tool_calls(owner, settled["id"])
    assert (call["tool"], call["status"], call["step"]) == ("lookup_order", "ok", "act")
    assert call["arguments"] == {"order_id": "A-7"}
    assert run.cost_usd == Decimal("0.0125")  # the tool's price is the run's
    steps = owner.get(f"/api/v1/runs/{settled['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["parse", "act", "scan", "report"]


def test_a_call_that_needs_approval_pauses_the_run_into_an_action_review(
    owner: Persona, celery_worker_app: object
) -> None:
    REFUNDS.clear()
    agent_id = reviewer(owner, REFUND, ["refund"])
    settled = run_diff(owner, agent_id)
    assert settled["status"] == "awaiting_review"
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=settled["id"])
        call = ToolCall.objects.get(run_id=settled["id"])
    assert request.kind == "action"
    assert request.context["action"]["arguments"] == {"order_id": "A-42", "amount": 120.5}
    assert (call.status, call.approval_id) == ("awaiting_approval", request.pk)
    assert REFUNDS == []
    response = owner.post(f"/api/v1/hitl/queue/{request.pk}/respond", {"decision": "approve"})
    assert response.status_code == 200, response.content
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with tenant_scope(owner.tenant.pk):
            run = Run.objects.get(pk=settled["id"])
        if run.status == "completed":
            break
        time.sleep(0.1)
    assert run.status == "completed"
    assert (run.result or {})["review"]["tool_call"]["status"] == "ok"
    assert REFUNDS == [("A-42", 120.5)]


def test_without_tools_a_blueprint_run_calls_nothing(
    owner: Persona, celery_worker_app: object
) -> None:
    response = owner.post(
        "/api/v1/agents", {"name": "plain", "blueprint": "code_review_agent", "config": {}}
    )
    assert response.status_code == 201, response.content
    assert response.json()["config"]["tools"] == []
    assert response.json()["config"]["tool_role"] == "operator"
    settled = run_diff(owner, str(response.json()["id"]))
    assert settled["status"] == "awaiting_review"
    assert tool_calls(owner, settled["id"]) == []
    with tenant_scope(owner.tenant.pk):
        assert not HITLRequest.objects.filter(run_id=settled["id"], kind="action").exists()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"tools": ["lookup_order", "lookup_order"]}, "tools[1]"),
        ({"tools": ["has space"]}, "tools[0]"),
        ({"tools": [{"id": "refund", "safety_level": "maybe"}]}, "tools[0]"),
        ({"tool_role": "admin"}, "tool_role"),
        ({"tool_settings": {"zendesk": {"base_url": "http://evil.example"}}}, "tool_settings"),
        ({"tool_settings": {"shell": {}}}, "tool_settings.shell"),
        ({"planner": review_plan(REFUND)}, "planner.definition"),  # refund is not granted
    ],
)
def test_bad_tool_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    """As the support agent's: the field, or a field under it (``tools[0].ToolGrantConfig
    .safety_level``: pydantic names the union member)."""
    body = {"name": "bad", "blueprint": "code_review_agent", "config": config}
    with nothing_written(owner.tenant):
        response = owner.post("/api/v1/agents", body)
        assert response.status_code == 422, response.content
        errors = response.json()["errors"]
        assert any(key == field or key.startswith(f"{field}.") for key in errors), errors


def test_another_tenant_never_sees_the_runs_tool_calls(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    settled = run_diff(owner, reviewer(owner, LOOKUP, ["lookup_order"]))
    foreign = outsider.get(f"/api/v1/runs/{settled['id']}/tool-calls")
    assert foreign.status_code == 404
    with tenant_scope(outsider.tenant.pk):
        assert ToolCall.objects.count() == 0
        assert Agent.objects.count() == 0
