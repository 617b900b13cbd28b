"""Playbooks as FSMs an agent can be told to run (issue 16, SPEC 9): extraction yields a
valid planner, the API shows it with its validation, and applying it changes the agent's
planner, which the next run follows (GET /runs/{id}/steps)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from agentflow.models import Agent
from agentflow.planners import PlannerConfig, planner_issues
from governance.audit import Actor
from governance.models import AuditEvent
from learning import playbooks
from learning.models import Playbook
from learning.playbook_fsm import planner_for, planner_problems, state_of
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.learning.test_playbooks import ARTICLE, CATEGORY, _run, _settings

ACTOR = Actor.system("tests")


def _extract(owner: Persona, agent: Agent, **run: Any) -> Playbook:
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(5):
            _run(agent, **run)
        playbook = playbooks.extract(agent, CATEGORY, actor=ACTOR).playbook
    assert playbook is not None
    return playbook


def _valid(planner: dict[str, Any]) -> bool:
    return planner_issues(PlannerConfig.model_validate(planner)) == []


@pytest.mark.parametrize(
    ("step", "state"),
    [
        ("classify:BILLING", "classify"),
        ("consult:knowledge:Refunds", "context"),
        ("answer:GenerativeHandler", "generate_response"),
        ("review:approve", "human_review"),
        ("handoff", "human_review"),
        ("deliver", "deliver"),
        ("tool:lookup_account", None),
    ],
)
def test_trace_steps_map_to_support_states(step: str, state: str | None) -> None:
    assert state_of(step) == state


@pytest.mark.parametrize(
    "steps",
    [
        [],
        ["classify:X", "deliver"],
        ["classify:X", "answer:H", "review:approve", "deliver"],
        ["tool:first", "classify:X", "consult:memory:m", "tool:t", "answer:H", "handoff"],
    ],
)
def test_any_steps_give_a_valid_fsm(steps: list[str]) -> None:
    planner = planner_for("x v1", steps)
    assert _valid(planner)
    assert planner_problems(planner) == []


@pytest.mark.django_db
def test_extraction_stores_a_valid_fsm_following_the_playbook(owner: Persona) -> None:
    agent = make_agent(owner)
    playbook = _extract(owner, agent, sources=[ARTICLE], tools=["lookup_account"])

    definition = playbook.planner["definition"]
    assert playbook.planner["type"] == "fsm"
    assert _valid(playbook.planner)
    assert definition["initial_state"] == "classify"
    assert list(definition["states"]) == [
        "classify",
        "context",
        "generate_response",
        "evaluate",
        "human_review",
        "deliver",
    ]
    states = definition["states"]
    assert states["classify"]["on_success"] == "context"
    assert states["context"]["on_success"] == "generate_response"
    assert states["evaluate"]["on_true"] == "deliver"
    # A tool is not an action a platform agent can take: guidance on the state before it.
    assert "tool:lookup_account (guidance)" in states["context"]["description"]
    assert "consult:knowledge:Resetting your password" in states["context"]["description"]
    # The same validation as an agent config, on the YAML text too.
    text = yaml.safe_dump(definition, sort_keys=False)
    assert planner_issues(PlannerConfig(type="fsm", definition=text)) == []


@pytest.mark.django_db
def test_runs_approved_by_a_person_end_the_fsm_with_a_person(owner: Persona) -> None:
    agent = make_agent(owner)
    playbook = _extract(owner, agent, sources=[], escalated=True, decision="approve")

    definition = playbook.planner["definition"]
    assert "review:approve" in playbook.steps
    assert "context" not in definition["states"], "no common source: no context state"
    assert definition["final_states"] == ["human_review"]
    assert definition["states"]["evaluate"]["on_success"] == "human_review"
    assert _valid(playbook.planner)


@pytest.mark.django_db
def test_the_api_shows_the_fsm_and_its_validation(owner: Persona, outsider: Persona) -> None:
    agent = make_agent(owner)
    playbook = _extract(owner, agent, sources=[ARTICLE])

    detail = owner.get(f"/api/v1/learning/playbooks/{playbook.pk}")
    assert detail.status_code == 200, detail.json()
    body = detail.json()
    assert body["planner"] == playbook.planner
    assert yaml.safe_load(body["planner_yaml"]) == playbook.planner["definition"]
    assert body["planner_validation"] == {"valid": True, "errors": []}
    listed = owner.get("/api/v1/learning/playbooks").json()["results"]
    assert [row["planner_validation"]["valid"] for row in listed] == [True]
    assert outsider.get(f"/api/v1/learning/playbooks/{playbook.pk}").status_code == 404


@pytest.mark.django_db
def test_an_invalid_stored_planner_is_shown_invalid_with_its_errors(owner: Persona) -> None:
    agent = make_agent(owner)
    playbook = _extract(owner, agent, sources=[ARTICLE])
    broken = {**playbook.planner["definition"], "initial_state": "nowhere"}
    with tenant_scope(owner.tenant.pk):
        Playbook.objects.filter(pk=playbook.pk).update(
            planner={"type": "fsm", "definition": broken}
        )

    body = owner.get(f"/api/v1/learning/playbooks/{playbook.pk}").json()
    assert body["planner_validation"]["valid"] is False
    assert any("nowhere" in error for error in body["planner_validation"]["errors"])
    applied = owner.post(f"/api/v1/learning/playbooks/{playbook.pk}/apply")
    assert applied.status_code == 422, applied.json()
    assert "nowhere" in applied.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_applying_tells_the_agent_to_run_the_playbook(
    owner: Persona, celery_worker_app: object
) -> None:
    agent = make_agent(owner)
    # Successful runs that consulted nothing: the playbook's FSM has no context state.
    playbook = _extract(owner, agent, sources=[])
    version = agent.version

    applied = owner.post(f"/api/v1/learning/playbooks/{playbook.pk}/apply")
    assert applied.status_code == 200, applied.json()
    body = applied.json()
    assert body["playbook"]["id"] == str(playbook.pk)
    assert body["agent"]["version"] == version + 1
    planner = body["agent"]["config"]["planner"]
    assert planner["type"] == "fsm"
    assert yaml.safe_load(planner["definition"]) == playbook.planner["definition"]
    with tenant_scope(owner.tenant.pk):
        actions = set(
            AuditEvent.objects.filter(target_id__in=[str(agent.pk), str(playbook.pk)]).values_list(
                "action", flat=True
            )
        )
    assert {"agent.updated", "learning.playbook.applied"} <= actions

    run = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "follower", "message": "How do I reset my password?"},
        headers={"Prefer": "wait=20"},
    )
    assert run.status_code == 201, run.json()
    steps = owner.get(f"/api/v1/runs/{run.json()['id']}/steps").json()["steps"]
    nodes = [step["node"] for step in steps]
    assert nodes[:3] == ["classify", "generate_response", "evaluate"], nodes
    assert nodes[3] in ("deliver", "human_review")
    assert "context" not in nodes


@pytest.mark.django_db
def test_applying_a_retired_or_foreign_playbook_is_refused(owner: Persona) -> None:
    agent = make_agent(owner)
    playbook = _extract(owner, agent, sources=[ARTICLE])
    other = make_persona("Initech", tier="professional")

    assert other.post(f"/api/v1/learning/playbooks/{playbook.pk}/apply").status_code == 404
    with tenant_scope(owner.tenant.pk):
        playbooks.retire(actor=ACTOR, playbook=playbook)
    refused = owner.post(f"/api/v1/learning/playbooks/{playbook.pk}/apply")
    assert refused.status_code == 409, refused.json()
    with tenant_scope(owner.tenant.pk):
        agent.refresh_from_db()
    assert "planner" not in agent.config or agent.config["planner"] is None
