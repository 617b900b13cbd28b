"""Actions approved by a human and executed exactly once (issue 17, stage C).

A run's plan proposes `refund` (requires_confirmation): the run waits with an HITL request
of kind `action`; approve / edit / reject go through the respond endpoint; a real Celery
worker (in this process) executes the approved call."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentflow import orchestration, tooling
from agentflow.models import Run, ToolCall
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, decide_concurrently
from tests.platform.tools.conftest import REFUNDS
from tests.platform.tools.test_run_tools import REFUND, planned_agent, settle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_refunds() -> None:
    REFUNDS.clear()


def paused(owner: Persona) -> tuple[dict[str, Any], HITLRequest, ToolCall]:
    run = settle(owner, planned_agent(owner, REFUND))
    assert run["status"] == "awaiting_review", run
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
        call = ToolCall.objects.get(run_id=run["id"])
    return run, request, call


def respond(persona: Persona, request: HITLRequest, body: dict[str, Any]) -> Any:
    return persona.post(f"/api/v1/hitl/queue/{request.pk}/respond", body)


def wait_for(owner: Persona, call: ToolCall, statuses: tuple[str, ...]) -> ToolCall:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with tenant_scope(owner.tenant.pk):
            call.refresh_from_db()
        if call.status in statuses:
            return call
        time.sleep(0.1)
    pytest.fail(f"the call stayed {call.status}")


def run_status(owner: Persona, run_id: str) -> str:
    with tenant_scope(owner.tenant.pk):
        return str(Run.objects.get(pk=run_id).status)


def test_the_request_carries_the_call(owner: Persona, celery_worker_app: object) -> None:
    _run, request, call = paused(owner)
    assert request.kind == "action"
    action = request.context["action"]
    assert action["tool"] == "refund"
    assert action["arguments"] == {"order_id": "A-42", "amount": 120.5}
    assert action["input_schema"]["required"] == ["order_id", "amount"]
    assert action["safety_level"] == "requires_confirmation"
    assert call.approval_id == request.pk
    body = owner.get(f"/api/v1/hitl/queue/{request.pk}").json()
    assert body["kind"] == "action"
    assert REFUNDS == []  # proposed, not run


def test_approve_executes_once_and_settles_the_run(
    owner: Persona, celery_worker_app: object
) -> None:
    run, request, call = paused(owner)
    response = respond(owner, request, {"decision": "approve"})
    assert response.status_code == 200, response.content
    call = wait_for(owner, call, ("ok", "error"))
    assert call.status == "ok"
    assert "refunded 120.5 on A-42" in str(call.result)
    assert call.pending_arguments is None
    assert REFUNDS == [("A-42", 120.5)]
    deadline = time.monotonic() + 10
    while run_status(owner, run["id"]) != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_status(owner, run["id"]) == "completed"
    with tenant_scope(owner.tenant.pk):
        result = Run.objects.get(pk=run["id"]).result or {}
    assert result["review"]["tool_call"]["status"] == "ok"
    # Approving again changes nothing and runs nothing.
    assert respond(owner, request, {"decision": "approve"}).status_code == 409
    with tenant_scope(owner.tenant.pk):
        assert orchestration.execute_approved_tool_call(str(call.pk)) == "not_approved"
    assert REFUNDS == [("A-42", 120.5)]


def test_two_concurrent_approvals_execute_once(owner: Persona, celery_worker_app: object) -> None:
    _run, request, call = paused(owner)
    codes = decide_concurrently(owner, request.pk, {"decision": "approve"})
    assert codes == [200, 409]
    wait_for(owner, call, ("ok",))
    time.sleep(0.5)  # a second execution, were there one, would have landed by now
    assert REFUNDS == [("A-42", 120.5)]


def test_edit_with_invalid_arguments_is_refused_and_changes_nothing(
    owner: Persona, celery_worker_app: object
) -> None:
    _run, request, call = paused(owner)
    response = respond(
        owner, request, {"decision": "edit", "arguments": {"order_id": "A-42", "amount": "lots"}}
    )
    assert response.status_code == 422, response.content
    assert "arguments.amount" in response.json()["errors"]
    missing = respond(owner, request, {"decision": "edit"})
    assert missing.status_code == 422
    with tenant_scope(owner.tenant.pk):
        request.refresh_from_db()
        call.refresh_from_db()
    assert request.status == "pending"
    assert call.status == "awaiting_approval"
    assert REFUNDS == []


def test_edit_executes_the_edited_call(owner: Persona, celery_worker_app: object) -> None:
    _run, request, call = paused(owner)
    response = respond(
        owner, request, {"decision": "edit", "arguments": {"order_id": "A-42", "amount": 20}}
    )
    assert response.status_code == 200, response.content
    wait_for(owner, call, ("ok",))
    assert REFUNDS == [("A-42", 20)]


def test_reject_settles_the_run_and_runs_nothing(owner: Persona, celery_worker_app: object) -> None:
    run, request, call = paused(owner)
    response = respond(owner, request, {"decision": "reject", "reason": "over the limit"})
    assert response.status_code == 200, response.content
    with tenant_scope(owner.tenant.pk):
        call.refresh_from_db()
        stored = Run.objects.get(pk=run["id"])
    assert call.status == "rejected"
    assert call.pending_arguments is None
    assert stored.status == "completed"
    assert (stored.result or {})["review"]["reason"] == "over the limit"
    time.sleep(0.3)
    assert REFUNDS == []


def test_a_lost_execution_is_resent_by_the_sweep_and_runs_once(
    owner: Persona, celery_worker_app: object
) -> None:
    """Approved, then the task never ran (the worker died before taking it): the sweep
    re-sends it and the call runs once; a later sweep finds nothing."""
    _run, _request, call = paused(owner)
    with tenant_scope(owner.tenant.pk):
        claimed = tooling.claim_approval(
            call.pk, approve=True, arguments=None, approver_role="operator"
        )
        assert claimed is not None
        ToolCall.objects.filter(pk=call.pk).update(
            approved_at=datetime.now(UTC) - timedelta(minutes=5)
        )
    assert REFUNDS == []
    assert orchestration.recover_tool_calls() == 1
    wait_for(owner, call, ("ok",))
    assert orchestration.recover_tool_calls() == 0
    assert REFUNDS == [("A-42", 120.5)]


def test_a_call_interrupted_while_running_is_not_run_again(
    owner: Persona, celery_worker_app: object
) -> None:
    run, _request, call = paused(owner)
    with tenant_scope(owner.tenant.pk):
        ToolCall.objects.filter(pk=call.pk).update(
            status="executing", approved_at=datetime.now(UTC) - timedelta(hours=1)
        )
    assert orchestration.recover_tool_calls() == 0
    with tenant_scope(owner.tenant.pk):
        call.refresh_from_db()
    assert call.status == "error"
    assert "not run again" in call.error
    assert run_status(owner, run["id"]) == "completed"
    assert REFUNDS == []


def test_dangerous_calls_need_an_operator_or_owner() -> None:
    action = {"safety_level": "dangerous", "input_schema": {"type": "object"}}
    with pytest.raises(tooling.ToolDenied):
        tooling.check_action_decision(action, "approve", None, "reviewer")
    tooling.check_action_decision(action, "approve", None, "operator")
    tooling.check_action_decision(action, "reject", None, "reviewer")


def test_an_operators_proposal_is_approved_and_runs_once(
    owner: Persona, celery_worker_app: object
) -> None:
    from tests.platform.tools.conftest import tool_agent

    agent = tool_agent(owner, tools=["refund"], name="try")
    proposed = owner.post(
        f"/api/v1/agents/{agent.pk}/tools/refund/invoke",
        {"arguments": {"order_id": "B-7", "amount": 3}},
    )
    assert proposed.status_code == 202, proposed.content
    request_path = proposed.headers["Location"]
    assert REFUNDS == []
    approved = owner.post(f"{request_path}/respond", {"decision": "approve"})
    assert approved.status_code == 200, approved.content
    with tenant_scope(owner.tenant.pk):
        call = ToolCall.objects.get(pk=proposed.json()["tool_call_id"])
    wait_for(owner, call, ("ok",))
    assert REFUNDS == [("B-7", 3)]
    deadline = time.monotonic() + 10
    while run_status(owner, str(call.run_id)) != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_status(owner, str(call.run_id)) == "completed"
