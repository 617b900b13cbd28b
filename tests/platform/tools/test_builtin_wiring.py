"""The built-in tools in an agent's registry (issue 17): listed, granted by config, called
from a run's plan; handoff_to_human acts for the run that calls it, once."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import ToolCall
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.tools.conftest import tool_agent
from tests.platform.tools.test_run_tools import settle

pytestmark = pytest.mark.django_db(transaction=True)

HANDOFF = "{tool: handoff_to_human, arguments: {reason: \"'the customer asked for a person'\"}}"


def test_the_built_ins_are_listed_and_only_granted_ones_are_callable(owner: Persona) -> None:
    agent = tool_agent(owner, tools=["knowledge_search"])
    listed = {t["id"]: t for t in owner.get(f"/api/v1/agents/{agent.pk}/tools").json()}
    assert {"knowledge_search", "handoff_to_human"} <= set(listed)
    assert "lookup_order" not in listed or listed["lookup_order"]["granted"] is False
    assert listed["knowledge_search"]["granted"] is True
    assert listed["handoff_to_human"]["granted"] is False
    found = owner.post(
        f"/api/v1/agents/{agent.pk}/tools/knowledge_search/invoke",
        {"arguments": {"query": "reset my password"}},
    )
    assert found.status_code == 200, found.json()
    refused = owner.post(
        f"/api/v1/agents/{agent.pk}/tools/handoff_to_human/invoke",
        {"arguments": {"run_id": "00000000-0000-0000-0000-000000000000", "reason": "x"}},
    )
    assert refused.status_code == 403


def test_a_bad_tool_setting_is_a_422_naming_it(owner: Persona) -> None:
    agent = tool_agent(owner, tools=[])
    config: dict[str, Any] = {
        **SUPPORT_CONFIG,
        "tool_settings": {"lookup_order": {"url_template": "https://evil.example/{order_id}"}},
    }
    response = owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config})
    assert response.status_code == 422, response.json()
    assert "tool_settings.lookup_order" in str(response.json())


def test_a_plan_that_hands_off_puts_the_run_before_one_person(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = tool_agent(owner, tools=["handoff_to_human"])
    plan = f"""\
initial_state: classify
final_states: [human_review]
states:
  classify:
    on_success: handoff
    on_error: human_review
  handoff:
    action: {HANDOFF}
    on_success: human_review
    on_error: human_review
"""
    config = {
        **SUPPORT_CONFIG,
        "tools": ["handoff_to_human"],
        "planner": {"type": "fsm", "definition": plan},
    }
    assert owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config}).status_code == 200

    run = settle(owner, agent)

    assert run["status"] == "awaiting_review"
    with tenant_scope(owner.tenant.pk):
        calls = list(ToolCall.objects.filter(run_id=run["id"]).values_list("tool", "status"))
        requests = list(HITLRequest.objects.filter(run_id=run["id"]))
    assert [tool for tool, _ in calls] == ["handoff_to_human"]
    assert len(requests) == 1  # the hand-off's: the run's escalation queued no second one
    assert requests[0].kind == "manual"  # queued by the hand-off, not by the escalation
    assert requests[0].context.get("after_the_fact") is True
