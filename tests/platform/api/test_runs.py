"""The run API end to end on a real Celery worker: 201, 202 → 200 → 303, cancel, conversation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow.models import Message, Run, RunStatus, RunTransition
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_settled(owner: Persona, run_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = owner.get(f"/api/v1/runs/{run_id}")
        if response.status_code == 303 or response.json().get("status") not in (
            "pending",
            "processing",
        ):
            return response
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not settle")


def test_fast_answer_is_201_with_the_body_and_location(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u1", "message": "How do I reset my password?"},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"] == f"/api/v1/runs/{body['id']}"
    assert body["status"] == "completed"
    assert body["result"]["intent"] == "PASSWORD_RESET"
    assert "Reset password" in body["result"]["content"]
    assert body["result"]["metadata"]["offline"] is True

    conversation = owner.get(f"/api/v1/sessions/{body['session_id']}/conversation").json()
    assert [m["role"] for m in conversation["results"]] == ["user", "assistant"]
    assert conversation["results"][0]["content"] == "How do I reset my password?"
    assert all(m["created_at"].endswith("Z") for m in conversation["results"])


def test_async_run_is_202_then_200_then_303_to_the_result(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u2", "message": "How do I request a refund?"},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    assert response["Retry-After"] == "1"
    run_id = response.json()["id"]
    assert response.json()["status"] in ("pending", "processing", "completed")

    settled = _wait_settled(owner, run_id)
    assert settled.status_code == 303, (settled.json()["status"], settled.json().get("result"))
    assert settled["Location"] == f"/api/v1/runs/{run_id}/result"
    result = owner.get(settled["Location"])
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "completed"
    assert body["result"]["intent"] == "BILLING"
    steps = {s["name"]: s for s in body["steps"]}
    assert list(steps) == [
        "session",
        "classify",
        "thread",
        "context",
        "generate",
        "evaluate",
        "update",
    ]
    # The LLM's usage is on the stage that called it; the timeline adds up to the run.
    assert steps["generate"]["tokens"] == body["tokens"] > 0
    assert sum(s["tokens"] for s in body["steps"]) == body["tokens"]
    assert steps["classify"]["detail"]["intent"] == "BILLING"
    assert steps["context"]["detail"]["sources"][0]["kind"] == "knowledge"
    assert steps["evaluate"]["detail"]["escalated"] is False
    with tenant_scope(owner.tenant.pk):
        transitions = list(
            RunTransition.objects.filter(run_id=run_id).values_list("to_status", flat=True)
        )
    assert transitions == ["processing", "completed"]


def test_always_review_intent_waits_for_a_human(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u3", "message": "I want to talk to a human please"},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "awaiting_review"
    assert body["awaiting_review"] is True
    assert body["result"]["escalated"] is True
    poll = owner.get(f"/api/v1/runs/{body['id']}")
    assert poll.status_code == 200
    assert poll.json()["status"] == "awaiting_review"
    with tenant_scope(owner.tenant.pk):
        roles = list(Message.objects.filter(run_id=body["id"]).values_list("role", flat=True))
    assert roles == ["user"], "no assistant answer before a human decides"


def test_cancelling_a_pending_run(owner: Persona, agent: Any) -> None:
    # No worker here: the run stays pending until cancelled.
    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u4", "message": "I was charged twice"},
        headers={"Prefer": "respond-async"},
    )
    run_id = created.json()["id"]
    cancelled = owner.delete(f"/api/v1/runs/{run_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = owner.delete(f"/api/v1/runs/{run_id}")
    assert again.status_code == 409
    assert again.json()["error_type"] == "run_finished"
    assert owner.get(f"/api/v1/runs/{run_id}/result").status_code == 409


def test_a_cancelled_run_is_never_completed_by_a_late_worker(owner: Persona, agent: Any) -> None:
    from agentflow.services import execute_run

    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u5", "message": "refund please"},
        headers={"Prefer": "respond-async"},
    )
    run_id = created.json()["id"]
    owner.delete(f"/api/v1/runs/{run_id}")
    with tenant_scope(owner.tenant.pk):
        assert execute_run(run_id) == RunStatus.CANCELLED
        assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED
        assert not Message.objects.filter(run_id=run_id).exists()


def test_a_duplicate_delivery_completes_once(owner: Persona, agent: Any) -> None:
    from agentflow.services import execute_run

    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u6", "message": "How do I reset my password?"},
        headers={"Prefer": "respond-async"},
    )
    run_id = created.json()["id"]
    with tenant_scope(owner.tenant.pk):
        assert execute_run(run_id) == RunStatus.COMPLETED
        assert execute_run(run_id) == RunStatus.COMPLETED  # redelivered: nothing happens
        assert Message.objects.filter(run_id=run_id, role="assistant").count() == 1
        transitions = RunTransition.objects.filter(run_id=run_id, to_status="completed")
        assert transitions.count() == 1


def test_runs_list_uses_the_envelope_and_filters(owner: Persona, agent: Any) -> None:
    for i in range(3):
        owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": f"list{i}", "message": "hello"},
            headers={"Prefer": "respond-async"},
        )
    page = owner.get("/api/v1/runs?limit=2&sort_by=created_at&sort_order=asc").json()
    assert page["total"] == 3
    assert page["limit"] == 2
    assert page["offset"] == 0
    assert page["has_more"] is True
    assert len(page["results"]) == 2
    pending = owner.get("/api/v1/runs?status=pending").json()
    assert pending["total"] == 3
    bad = owner.get("/api/v1/runs?sort_by=secret_column")
    assert bad.status_code == 422
    assert "sort_by" in bad.json()["errors"]


def test_shared_run_shapes_match_a_fresh_serializer_on_every_thread(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    """The 202 body and live events reuse one serializer per shape: for settled and pending
    runs, with and without the result, from several threads at once, the body is exactly
    what a serializer built for the call gives."""
    from concurrent.futures import ThreadPoolExecutor

    from agentflow.api.serializers import NO_RESULT, RunSerializer, run_body

    settled = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u9", "message": "How do I reset my password?"},
        headers={"Prefer": "wait=20"},
    ).json()
    pending = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u9", "message": "And a refund?"},
        headers={"Prefer": "respond-async"},
    ).json()
    with tenant_scope(owner.tenant.pk):
        runs = list(Run.objects.filter(pk__in=[settled["id"], pending["id"]]))

    def shapes(run: Run) -> list[bool]:
        return [
            run_body(run) == dict(RunSerializer(run).data),
            run_body(run, include_result=False) == dict(RunSerializer(run, context=NO_RESULT).data),
        ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        checks = list(pool.map(shapes, runs * 20))
    assert all(all(pair) for pair in checks)
    assert "result" in run_body(next(r for r in runs if str(r.pk) == settled["id"]))
    assert all("result" not in run_body(run, include_result=False) for run in runs)
