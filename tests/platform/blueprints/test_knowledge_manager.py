"""knowledge_manager_agent through the API on a real worker: create (422 on bad configs),
gaps from the tenant's escalated runs against its knowledge (pgvector), near-duplicate
and stale articles, a draft from approved golden paths waiting for a reviewer, and
nothing of another tenant ever in the output."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentflow import knowledge
from agentflow.models import Agent, KnowledgeDocument, Run, RunStatus
from hitl.models import HITLRequest
from learning.models import GoldenPath, GoldenPathSource
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"
EXPORT_QUESTIONS = (
    "How do I export my data to CSV?",
    "Can I export my reports as a CSV file?",
    "export to csv is not working",
    "Is there a way to export data to Excel or CSV?",
)
PASSWORD_QUESTIONS = (
    "How do I reset my password?",
    "I forgot my password and the reset link expired",
)
OKTA_QUESTIONS = ("Do you support single sign-on with Okta?", "SAML single sign-on with Okta fails")


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def outsider(db: None) -> Persona:
    return make_persona("Globex", tier="professional")


def _create(persona: Persona, config: dict[str, Any] | None = None) -> Any:
    body = {"name": "librarian", "blueprint": "knowledge_manager_agent", "config": config or {}}
    return persona.post(AGENTS, body)


def _escalated(agent: Agent, questions: tuple[str, ...], confidence: float = 0.2) -> None:
    """Runs the support agent settled earlier: escalated, or answered with low confidence."""
    with tenant_scope(agent.tenant_id):
        for index, text in enumerate(questions):
            Run.objects.create(
                agent=agent,
                user_id=f"customer-{index}",
                input=text,
                status=RunStatus.COMPLETED,
                result={"escalated": index % 2 == 0, "confidence": confidence, "content": "..."},
            )


def _approved(agent: Agent, question: str, answer: str) -> GoldenPath:
    with tenant_scope(agent.tenant_id):
        return GoldenPath.objects.create(
            agent=agent,
            category="TECHNICAL_ISSUE",
            question=question,
            answer=answer,
            source=GoldenPathSource.APPROVED,
            score=0.9,
            embedding=knowledge.embed_query(question),
        )


def _run(persona: Persona, agent_id: str, message: str, metadata: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": "kb-editor", "message": message}
    if metadata is not None:
        body["metadata"] = metadata
    response = persona.post(f"{AGENTS}/{agent_id}/runs", body, headers={"Prefer": "wait=30"})
    assert response.status_code == 201, response.json()
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"stale_dayz": 10}, "stale_dayz"),
        ({"stale_days": 0}, "stale_days"),
        ({"cluster_similarity": 1.5}, "cluster_similarity"),
        ({"watched_agents": ["not-a-uuid"]}, "watched_agents[0]"),
        (
            {"watched_agents": ["6f1c1f7e-8c1b-4a59-9a51-1b7c1f1f0001"] * 2},
            "watched_agents[1]",
        ),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(_create(owner, config), field)


def test_gaps_come_from_this_tenants_questions_and_knowledge(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)  # knows password resets and refunds
    _escalated(support, EXPORT_QUESTIONS + PASSWORD_QUESTIONS)
    _escalated(make_agent(outsider), OKTA_QUESTIONS * 3)
    with tenant_scope(owner.tenant.pk):  # an auditor's escalations are no knowledge gap
        auditor = Agent.objects.create(name="auditor", blueprint="compliance_auditor_agent")
    _escalated(auditor, ("We will refund $900.", "We will refund $950."))
    created = _create(owner)
    assert created.status_code == 201, created.json()
    body = _run(owner, created.json()["id"], "gaps")
    assert body["status"] == "completed"
    output = body["result"]["metadata"]["output"]
    assert output["summary"] == {"questions": 6, "clusters": 2, "covered": 1, "unexamined": 0}
    [gap] = output["gaps"]
    assert gap["size"] == 4
    assert set(gap["examples"]) == set(EXPORT_QUESTIONS)
    assert gap["best_match"] is None, "no chunk about exports is similar at all"
    assert "okta" not in json.dumps(output).lower()
    steps = owner.get(f"/api/v1/runs/{body['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["select", "gaps"]


def test_duplicates_and_stale_articles(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)
    with tenant_scope(owner.tenant.pk):
        knowledge.ingest_document(
            agent=support,
            title="Password reset",
            content_type="text/markdown",
            text="To reset your password open Settings, choose Security, then click 'Reset "
            "password'. We email you a link valid for 30 minutes.",
        )
        KnowledgeDocument.objects.filter(title="Refunds").update(
            created_at=datetime.now(UTC) - timedelta(days=400)
        )
    foreign = make_agent(outsider)
    with tenant_scope(outsider.tenant.pk):
        KnowledgeDocument.objects.filter(agent=foreign).update(
            created_at=datetime.now(UTC) - timedelta(days=900)
        )
    librarian = _create(owner, {"stale_days": 180}).json()["id"]

    duplicates = _run(owner, librarian, "duplicates")["result"]["metadata"]["output"]
    assert duplicates["summary"] == {"articles": 3, "pairs": 1, "listed": 1}
    titles = {a["title"] for a in duplicates["pairs"][0]["articles"]}
    assert titles == {"Resetting your password", "Password reset"}

    stale = _run(owner, librarian, "anything", {"task": "stale"})["result"]["metadata"]["output"]
    assert [(a["title"], a["age_days"]) for a in stale["stale"]] == [("Refunds", 400)]
    assert stale["summary"]["articles"] == 3


def test_a_draft_from_approved_answers_waits_for_a_reviewer(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)
    used = _approved(
        support,
        "How do I export my data to CSV?",
        "Open Reports, pick the date range and click Export > CSV.",
    )
    _approved(support, "How do I reset my password?", "Use Settings > Security.")
    _approved(make_agent(outsider), "How do I export data to CSV?", "Globex: use the CLI exporter.")
    librarian = _create(owner).json()["id"]
    with tenant_scope(owner.tenant.pk):
        # An earlier draft a reviewer approved: a golden path of the librarian itself.
        _approved(Agent.objects.get(pk=librarian), "draft: export data to CSV", "# Old draft")

    body = _run(owner, librarian, "draft: export data to CSV")
    assert body["status"] == "awaiting_review"
    result = body["result"]
    output = result["metadata"]["output"]
    assert [s["golden_path_id"] for s in output["sources"]] == [str(used.pk)]
    assert result["proposed_answer"] == output["draft"]
    assert output["drafted_by"] == "template"  # offline: no model configured
    assert "Open Reports, pick the date range" in output["draft"]
    assert "Globex" not in output["draft"]
    assert "Old draft" not in output["draft"]
    assert result["escalation_reason"] == "knowledge draft for review: export data to CSV"
    with tenant_scope(owner.tenant.pk):
        review = HITLRequest.objects.get(run_id=body["id"])
    assert review.status == "pending"


def test_another_tenants_librarian_is_404(owner: Persona, outsider: Persona) -> None:
    librarian = _create(owner).json()["id"]
    assert outsider.get(f"{AGENTS}/{librarian}").status_code == 404
    response = outsider.post(f"{AGENTS}/{librarian}/runs", {"user_id": "x", "message": "gaps"})
    assert response.status_code == 404
    with tenant_scope(outsider.tenant.pk):
        assert not Run.objects.exists()


def test_watching_another_tenants_agent_sees_nothing_of_it(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)
    _escalated(support, EXPORT_QUESTIONS)
    _approved(support, "How do I export my data to CSV?", "Acme: open Reports > Export.")
    librarian = _create(outsider, {"watched_agents": [str(support.pk)]}).json()["id"]
    gaps = _run(outsider, librarian, "gaps")["result"]["metadata"]["output"]
    assert gaps["summary"]["questions"] == 0
    stale = _run(outsider, librarian, "stale")["result"]["metadata"]["output"]
    assert stale["summary"]["articles"] == 0
    draft = _run(outsider, librarian, "draft: export data")["result"]["metadata"]["output"]
    assert draft["sources"] == []
    assert draft["draft"] is None


STALE_ONLY = """\
initial_state: select
final_states: [stale, rejected]
states:
  select:
    condition: "state.task == 'stale'"
    on_true: stale
    on_false: rejected
    on_error: rejected
"""


def test_a_tenant_planner_can_narrow_the_tasks(owner: Persona, celery_worker_app: object) -> None:
    make_agent(owner)
    created = _create(owner, {"planner": {"type": "fsm", "definition": STALE_ONLY}})
    assert created.status_code == 201, created.json()
    stale = _run(owner, created.json()["id"], "stale")["result"]["metadata"]["output"]
    assert stale["summary"]["articles"] == 2
    refused = _run(owner, created.json()["id"], "gaps")
    steps = owner.get(f"/api/v1/runs/{refused['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["select", "rejected"]
    error = refused["result"]["metadata"]["output"]["error"]
    assert error == {
        "field": "message",
        "reason": "this agent's planner does not run the gaps task",
    }


def test_a_planner_naming_a_step_the_librarian_lacks_is_a_422(owner: Persona) -> None:
    definition = STALE_ONLY.replace("on_true: stale", "on_true: publish")
    with nothing_written(owner.tenant):
        response = _create(owner, {"planner": {"type": "fsm", "definition": definition}})
    assert response.status_code == 422, response.json()
    assert "publish" in str(response.json())
