"""A run's plan goes on after a person decides (issues 16, 17): it resumes at the state that
paused, exactly once, runs the rest of the plan in a real Celery worker, and settles; a
rejection takes the plan's error branch; a tool on the way that needs approval pauses it
again, and approving that call goes on from there."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings

from agentflow import knowledge, orchestration
from agentflow.models import Message, Run, ToolCall
from governance.models import AuditEvent
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import KNOWLEDGE, SUPPORT_CONFIG, Persona, decide_concurrently
from tests.platform.tools.conftest import REFUNDS, tool_agent

pytestmark = pytest.mark.django_db(transaction=True)

REVIEWED_PLAN = """\
initial_state: classify
final_states: [deliver, escalate]
states:
  classify: {on_success: context, on_error: escalate}
  context: {on_success: generate_response, on_error: generate_response}
  generate_response: {on_success: human_review, on_error: escalate}
  human_review:
    on_success: note
    on_error: refund_it
  note:
    action: {tool: lookup_order, arguments: {order_id: "state.review.decision"}}
    on_success: deliver
    on_error: escalate
  refund_it:
    action: {tool: refund, arguments: {order_id: "state.review.reason", amount: "1.5"}}
    on_success: deliver
    on_error: escalate
  escalate: {action: human_review}
"""


@pytest.fixture(autouse=True)
def _no_refunds() -> None:
    REFUNDS.clear()


def reviewed_agent(owner: Persona, plan: str = REVIEWED_PLAN) -> Any:
    agent = tool_agent(owner, tools=["lookup_order", "refund"])
    config = {
        **SUPPORT_CONFIG,
        "tools": ["lookup_order", "refund"],
        "planner": {"type": "fsm", "definition": plan},
    }
    response = owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config})
    assert response.status_code == 200, response.content
    with tenant_scope(owner.tenant.pk):
        for title, text in KNOWLEDGE:
            knowledge.ingest_document(
                agent=agent, title=title, content_type="text/markdown", text=text
            )
    return agent


def run_of(owner: Persona, run_id: str) -> Run:
    with tenant_scope(owner.tenant.pk):
        return Run.objects.get(pk=run_id)


def wait_status(owner: Persona, run_id: str, *statuses: str) -> Run:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = run_of(owner, run_id)
        if run.status in statuses:
            return run
        time.sleep(0.1)
    pytest.fail(f"the run stayed {run_of(owner, run_id).status}, not {statuses}")


def open_request(owner: Persona, run_id: str) -> HITLRequest:
    with tenant_scope(owner.tenant.pk):
        return HITLRequest.objects.get(run_id=run_id, status__in=("pending", "assigned"))


def paused_run(owner: Persona, agent: Any) -> tuple[Run, HITLRequest]:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "plan-user", "message": "How do I reset my password?"},
        headers={"Prefer": "wait=30"},
    )
    assert response.status_code in (201, 202), response.content
    run = wait_status(owner, response.json()["id"], "awaiting_review", "completed", "failed")
    assert run.status == "awaiting_review", run.result
    assert run.plan_snapshot is not None
    assert run.plan_snapshot["node"] == "human_review"
    return run, open_request(owner, str(run.pk))


def respond(persona: Persona, request: HITLRequest, body: dict[str, Any]) -> Any:
    return persona.post(f"/api/v1/hitl/queue/{request.pk}/respond", body)


def steps(owner: Persona, run_id: Any) -> list[tuple[str, str]]:
    body = owner.get(f"/api/v1/runs/{run_id}/steps").json()
    return [(step["node"], step["outcome"]) for step in body["steps"]]


def calls(owner: Persona, run_id: Any) -> list[ToolCall]:
    with tenant_scope(owner.tenant.pk):
        return list(ToolCall.objects.filter(run_id=run_id).order_by("created_at"))


def test_approval_continues_the_plan_from_the_review_state(
    owner: Persona, celery_worker_app: object
) -> None:
    run, request = paused_run(owner, reviewed_agent(owner))
    proposed = run.result["proposed_answer"]
    assert steps(owner, run.pk)[-1] == ("human_review", "paused")

    response = respond(owner, request, {"decision": "approve"})

    assert response.status_code == 200, response.content
    done = wait_status(owner, str(run.pk), "completed")
    assert done.plan_snapshot is None  # used up
    assert done.result["content"] == proposed
    assert done.result["review"]["decision"] == "approve"
    assert steps(owner, run.pk)[-4:] == [
        ("human_review", "paused"),
        ("human_review", "success"),
        ("note", "success"),
        ("deliver", "success"),
    ]
    [note] = calls(owner, run.pk)
    assert (note.tool, note.step, note.status) == ("lookup_order", "note", "ok")
    assert note.arguments["order_id"] == "approve"  # the plan read state.review.decision
    with tenant_scope(owner.tenant.pk):
        answers = Message.objects.filter(run=run, role="assistant")
        assert [m.content for m in answers] == [proposed]
        actions = set(
            AuditEvent.objects.filter(target_id=str(run.pk)).values_list("action", flat=True)
        )
    assert {"run.resumed", "run.completed"} <= actions
    assert respond(owner, request, {"decision": "approve"}).status_code == 409


def test_two_concurrent_decisions_continue_the_plan_once(
    owner: Persona, celery_worker_app: object
) -> None:
    run, request = paused_run(owner, reviewed_agent(owner))
    codes = decide_concurrently(owner, request.pk, {"decision": "approve"})

    assert codes == [200, 409]
    wait_status(owner, str(run.pk), "completed")
    time.sleep(0.5)  # a second continuation, were there one, would have landed by now
    assert [call.tool for call in calls(owner, run.pk)] == ["lookup_order"]
    assert [node for node, _ in steps(owner, run.pk)].count("note") == 1


def test_rejection_takes_the_error_branch_and_a_tool_on_it_waits_for_approval(
    owner: Persona, celery_worker_app: object
) -> None:
    run, request = paused_run(owner, reviewed_agent(owner))

    response = respond(owner, request, {"decision": "reject", "reason": "A-77"})

    assert response.status_code == 200, response.content
    again = wait_status(owner, str(run.pk), "awaiting_review")
    for _ in range(100):  # back to awaiting review only once the continuation ran
        again = run_of(owner, str(run.pk))
        if again.plan_snapshot and again.plan_snapshot.get("node") == "refund_it":
            break
        time.sleep(0.1)
    assert again.plan_snapshot["node"] == "refund_it"
    action = open_request(owner, str(run.pk))
    assert action.kind == "action"
    assert action.context["action"]["arguments"] == {"order_id": "A-77", "amount": 1.5}
    assert REFUNDS == []  # proposed, not run

    assert respond(owner, action, {"decision": "approve"}).status_code == 200

    done = wait_status(owner, str(run.pk), "completed")
    assert REFUNDS == [("A-77", 1.5)]
    assert done.plan_snapshot is None
    assert done.result["review"]["decision"] == "approve"
    # What the customer reads is the first reviewer's: the rejection's hand-off.
    assert done.result["content"] == settings.AGENTFLOW["HITL_HANDOFF_MESSAGE"]
    assert steps(owner, run.pk)[-4:] == [
        ("human_review", "error"),
        ("refund_it", "paused"),
        ("refund_it", "success"),
        ("deliver", "success"),
    ]


def test_a_plan_changed_while_waiting_delivers_the_review_without_going_on(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = reviewed_agent(owner)
    run, request = paused_run(owner, agent)
    changed = REVIEWED_PLAN.replace(
        "on_success: deliver\n    on_error: escalate", "on_success: deliver", 1
    )
    reviewed_agent_config = {
        **SUPPORT_CONFIG,
        "tools": ["lookup_order", "refund"],
        "planner": {"type": "fsm", "definition": changed},
    }
    assert (
        owner.patch(f"/api/v1/agents/{agent.pk}", {"config": reviewed_agent_config}).status_code
        == 200
    )

    assert (
        respond(owner, request, {"decision": "edit", "response": "Reset it here."}).status_code
        == 200
    )

    done = wait_status(owner, str(run.pk), "completed")
    assert done.result["content"] == "Reset it here."
    assert "plan did not go on" in done.result["plan_error"]
    assert calls(owner, run.pk) == []


def test_an_expired_review_takes_the_rejection_branch(
    owner: Persona, celery_worker_app: object
) -> None:
    run, request = paused_run(owner, reviewed_agent(owner))

    # The SLA sweep, a month on: the request expires and the system rejects it.
    for _ in range(2):  # breach first, then expiry, whichever one sweep does
        orchestration.expire_overdue_reviews(datetime.now(UTC) + timedelta(days=30))

    with tenant_scope(owner.tenant.pk):
        request.refresh_from_db()
    assert request.status == "expired"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        again = run_of(owner, str(run.pk))
        if again.plan_snapshot and again.plan_snapshot.get("node") == "refund_it":
            break
        time.sleep(0.1)
    assert again.status == "awaiting_review"
    assert again.plan_snapshot["node"] == "refund_it"  # on_error of the paused review
    action = open_request(owner, str(run.pk))
    assert action.kind == "action"
    assert action.context["action"]["tool"] == "refund"
    assert REFUNDS == []
