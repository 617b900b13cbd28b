"""A run's steps are its planner's path (issue 16): GET /api/v1/runs/{id}/steps.

Runs go through a real Celery worker; the agent follows the default support FSM, or a
planner of its config that the kernel pipeline runs instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agentflow.models import Run
from tenants.context import tenant_scope
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona, make_agent

pytestmark = pytest.mark.django_db(transaction=True)

# Straight from classification to the answer: no context stage.
NO_CONTEXT_FSM = """\
initial_state: classify
final_states: [deliver, human_review]
states:
  classify:
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


def _ask(owner: Persona, agent_id: Any, user: str) -> dict[str, Any]:
    response = owner.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": user, "message": "How do I reset my password?"},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    return dict(response.json())


def _steps(owner: Persona, run_id: str) -> dict[str, Any]:
    response = owner.get(f"/api/v1/runs/{run_id}/steps")
    assert response.status_code == 200, response.json()
    return dict(response.json())


def test_the_default_plan_is_the_support_fsm_and_its_path_is_the_runs_steps(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    run = _ask(owner, agent.pk, "stepper")
    body = _steps(owner, run["id"])

    steps = body["steps"]
    assert body["status"] == "completed"
    assert [s["node"] for s in steps] == [
        "classify",
        "context",
        "generate_response",
        "evaluate",
        "deliver",
    ]
    assert [s["index"] for s in steps] == list(range(5))
    assert all(s["outcome"] == "success" for s in steps)
    assert [s["transition"] for s in steps] == [
        "context",
        "generate_response",
        "evaluate",
        "deliver",
        None,
    ]
    evaluate = steps[3]
    assert evaluate["via"] == "on_true"
    assert "response.confidence >=" in evaluate["condition"]
    assert steps[0]["action"] == "step:classify"
    # Placed in time within the run, in order.
    with tenant_scope(owner.tenant.pk):
        stored = Run.objects.get(pk=run["id"])
    starts = [datetime.fromisoformat(s["started_at"].replace("Z", "+00:00")) for s in steps]
    assert starts == sorted(starts)
    assert stored.started_at is not None
    assert stored.finished_at is not None
    assert stored.started_at <= starts[0]
    assert starts[-1] <= stored.finished_at


def test_a_planner_in_the_config_changes_the_path_runs_take(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = make_agent(owner, name="direct")
    patched = owner.patch(
        f"/api/v1/agents/{agent.pk}",
        {"config": {**SUPPORT_CONFIG, "planner": {"type": "fsm", "definition": NO_CONTEXT_FSM}}},
    )
    assert patched.status_code == 200, patched.json()

    run = _ask(owner, agent.pk, "direct-user")
    steps = _steps(owner, run["id"])["steps"]

    assert [s["node"] for s in steps] == ["classify", "generate_response", "evaluate", "deliver"]
    assert steps[2]["condition"] == "response.confidence >= 0.0"
    assert run["result"]["sources"] == [], "no context stage ran, so nothing was retrieved"


def test_steps_of_a_run_not_settled_are_empty_and_say_when_to_ask_again(
    owner: Persona, agent: Any
) -> None:
    accepted = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "waiting", "message": "Hello?"},
        headers={"Prefer": "respond-async"},
    )
    assert accepted.status_code == 202
    response = owner.get(f"/api/v1/runs/{accepted.json()['id']}/steps")
    assert response.status_code == 200
    assert response.json()["steps"] == []
    assert response["Retry-After"] == "1"


def test_another_tenants_run_steps_are_404(
    owner: Persona, outsider: Persona, agent: Any, celery_worker_app: object
) -> None:
    run = _ask(owner, agent.pk, "private")
    assert outsider.get(f"/api/v1/runs/{run['id']}/steps").status_code == 404
