"""From a real escalated run to a decision to the completed run, through the API and Celery.

The run is started over HTTP with the tenant's key and processed by a real Celery worker
(offline LLM); the pipeline escalates it, the request appears in the queue, a reviewer
signed in to the dashboard decides, and the run completes with the answer in the
conversation, once.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow.models import Message, Run, RunTransition, Thread
from hitl.models import HITLEvent, ReviewSettings
from learning import services as learning_services
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.hitl.conftest import (
    ALWAYS_REVIEW,
    LOW_CONFIDENCE,
    QUEUE,
    Member,
    audit_actions,
    escalated_run,
    review_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_for_queue(persona: Persona, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = persona.get(QUEUE).json()
        if body["results"]:
            return body
        time.sleep(0.05)
    raise AssertionError("nothing was queued")


def test_low_confidence_message_to_queue_to_approval_to_completed_run(
    owner: Persona, agent: Any, reviewer: Member, celery_worker_app: object
) -> None:
    started = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "customer-7", "message": LOW_CONFIDENCE, "priority": "high"},
        headers={"Prefer": "wait=20"},
    )
    assert started.status_code == 201, started.json()
    run = started.json()
    assert run["status"] == "awaiting_review"
    assert run["awaiting_review"] is True

    queue = _wait_for_queue(owner)
    assert queue["total"] == 1
    item = queue["results"][0]
    assert item["run_id"] == run["id"]
    assert item["kind"] == "low_confidence"
    assert item["priority"] == "high"
    assert item["status"] == "pending"
    assert item["question"] == LOW_CONFIDENCE
    assert "Reset password" in item["proposed_answer"]
    assert item["intent"] == run["result"]["intent"]
    assert item["confidence"] == pytest.approx(run["result"]["confidence"])
    assert item["escalation_reason"] == "low_confidence"
    assert item["sources"]
    assert item["sources"][0]["kind"] == "knowledge"
    assert item["required_role"] == "reviewer"
    assert item["session_id"] == run["session_id"]

    claimed = reviewer.claim(item["id"])
    assert claimed.status_code == 200, claimed.json()
    assert claimed.json()["assignee"]["username"] == "rita"
    decided = reviewer.respond(item["id"], decision="approve")
    assert decided.status_code == 200, decided.json()
    assert decided.json()["status"] == "approved"

    # Visible through the API at once: the run redirects to its result.
    polled = owner.get(f"/api/v1/runs/{run['id']}")
    assert polled.status_code == 303
    result = owner.get(f"/api/v1/runs/{run['id']}/result").json()
    assert result["status"] == "completed"
    assert result["result"]["content"] == item["proposed_answer"]
    assert result["result"]["review"]["decision"] == "approve"
    conversation = owner.get(f"/api/v1/sessions/{run['session_id']}/conversation").json()
    assert [(m["role"], m["content"]) for m in conversation["results"]] == [
        ("user", LOW_CONFIDENCE),
        ("assistant", item["proposed_answer"]),
    ]
    with tenant_scope(owner.tenant.pk):
        transitions = list(
            RunTransition.objects.filter(run_id=run["id"]).values_list("to_status", flat=True)
        )
    assert transitions == ["processing", "awaiting_review", "completed"]

    history = owner.get(f"{QUEUE}/{item['id']}/history").json()
    assert [entry["action"] for entry in history["results"]] == ["queued", "claimed", "approved"]
    assert history["results"][2]["actor"] == {"type": "user", "id": str(reviewer.user.pk)}
    actions = audit_actions(owner.tenant)
    assert {"hitl.queued", "hitl.claimed", "hitl.approved", "run.completed"} <= set(actions)


def test_edit_delivers_the_reviewers_text(agent: Any, reviewer: Member) -> None:
    run = escalated_run(agent)
    request = review_of(run)
    text = "Open Settings > Security > Reset password; refunds are on the Billing page."
    response = reviewer.respond(request.pk, decision="edit", response=text)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "edited"
    assert response.json()["response"] == text
    with tenant_scope(agent.tenant_id):
        run.refresh_from_db()
        answers = list(Message.objects.filter(run=run, role="assistant").values_list("content"))
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["content"] == text
    assert answers == [(text,)]


def test_reject_delivers_the_configured_handoff_with_the_reason(
    agent: Any, reviewer: Member
) -> None:
    with tenant_scope(agent.tenant_id):
        ReviewSettings.objects.create(handoff_message="A person will call you back ({reason}).")
    request = review_of(escalated_run(agent, ALWAYS_REVIEW))
    assert request.kind == "always_review"
    response = reviewer.respond(request.pk, decision="reject", reason="needs a phone call")
    assert response.status_code == 200, response.json()
    with tenant_scope(agent.tenant_id):
        run = Run.objects.get(pk=request.run_id)
        answer = Message.objects.get(run=run, role="assistant").content
    assert answer == "A person will call you back (needs a phone call)."
    assert run.status == "completed"
    assert run.result is not None
    assert run.result["review"] == {
        "request_id": str(request.pk),
        "decision": "reject",
        "status": "rejected",
        "reason": "needs a phone call",
        "reviewer_id": reviewer.user.pk,
    }


def test_an_agents_settings_win_and_can_close_the_thread_instead(
    agent: Any, reviewer: Member
) -> None:
    with tenant_scope(agent.tenant_id):
        ReviewSettings.objects.create(handoff_message="Tenant-wide hand-off.")
        ReviewSettings.objects.create(agent=agent, on_reject="close_thread")
    run = escalated_run(agent)
    request = review_of(run)
    response = reviewer.respond(request.pk, decision="reject", reason="spam")
    assert response.status_code == 200, response.json()
    with tenant_scope(agent.tenant_id):
        run.refresh_from_db()
        assert run.result is not None
        thread = Thread.objects.get(pk=run.result["thread_id"])
        assert not Message.objects.filter(run=run, role="assistant").exists()
    assert run.status == "completed"
    assert thread.status == "resolved"
    assert "spam" in thread.resolution


def test_every_decision_is_signalled_for_learning_once(
    agent: Any, reviewer: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orchestrator calls learning explicitly (it was the review_decided signal).
    received: list[tuple[str, str, str]] = []
    record = learning_services.record_review_decided

    def receiver(request: Any) -> None:
        received.append((str(request.pk), request.decision, request.status))
        record(request)

    monkeypatch.setattr(learning_services, "record_review_decided", receiver)
    request = review_of(escalated_run(agent))
    assert reviewer.respond(request.pk, decision="approve").status_code == 200
    assert reviewer.respond(request.pk, decision="approve").status_code == 409
    assert received == [(str(request.pk), "approve", "approved")]


def test_a_failing_learning_receiver_rolls_the_decision_back(
    agent: Any, reviewer: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activity is recorded inside the decision's transaction: no decision without it."""

    def broken(request: Any) -> None:
        raise RuntimeError("learning is down")

    request = review_of(escalated_run(agent))
    with monkeypatch.context() as patched:
        patched.setattr(learning_services, "record_review_decided", broken)
        response = reviewer.respond(request.pk, decision="approve")
    assert response.status_code == 500
    request.refresh_from_db()
    assert request.status == "pending"
    with tenant_scope(agent.tenant_id):
        assert Run.objects.get(pk=request.run_id).status == "awaiting_review"
        assert not HITLEvent.objects.filter(request=request, action="approved").exists()
    assert reviewer.respond(request.pk, decision="approve").status_code == 200
