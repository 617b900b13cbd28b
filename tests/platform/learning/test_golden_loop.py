"""The learning loop end to end through the public API, a real Celery worker and pgvector.

A question the agent cannot answer escalates; a reviewer signed in to the dashboard edits
the answer; the same question (and a paraphrase), asked again by other customers, is
answered from the golden path with no escalation and the reply names it; a different
question still escalates. Two tenants asking the same question each only ever get their
own golden path.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from agentflow.models import Agent
from learning.models import GoldenPath
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.hitl.conftest import QUEUE, Member, eventually, make_member
from tests.platform.hitl.conftest import reviewer as reviewer

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "How can I change the email address of my account?"
PARAPHRASE = "how do I change my account email address"
UNRELATED = "Do you ship your hardware products to Canada?"
EDITED = (
    "Open Settings > Profile, enter the new email address and confirm it from the link we send."
)


def _ask(persona: Persona, agent: Agent, user_id: str, message: str) -> dict[str, Any]:
    response = persona.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": user_id, "message": message},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    return response.json()


def _escalate_and_edit(
    persona: Persona, agent: Agent, reviewer: Member, answer: str, user_id: str
) -> dict[str, Any]:
    run = _ask(persona, agent, user_id, QUESTION)
    assert run["status"] == "awaiting_review", run
    item = eventually(
        lambda: next(
            (i for i in persona.get(QUEUE).json()["results"] if i["run_id"] == run["id"]), None
        ),
        what="the review request",
    )
    decided = reviewer.respond(item["id"], decision="edit", response=answer)
    assert decided.status_code == 200, decided.json()
    _learnt(run["id"])
    return run


def _learnt(run_id: str) -> None:
    """The worker learns from a decision after it commits (learning.record_review_outcome)."""
    eventually(
        lambda: GoldenPath.unscoped.filter(trace_summary__runs__contains=[run_id]).exists(),
        what="the golden path of the decision",
    )


def _golden_path_ids(run: dict[str, Any]) -> list[str]:
    return [s["id"] for s in run["result"]["sources"] if s["kind"] == "golden_path"]


def test_an_edited_answer_answers_the_same_question_next_time(
    owner: Persona, agent: Agent, reviewer: Member, celery_worker_app: object
) -> None:
    first = _escalate_and_edit(owner, agent, reviewer, EDITED, "customer-1")

    paths = owner.get("/api/v1/learning/golden-paths").json()
    assert paths["total"] == 1
    path = paths["results"][0]
    assert path["question"] == QUESTION
    assert path["answer"] == EDITED
    assert path["source"] == "edited"
    assert path["source_run_id"] == first["id"]
    assert path["agent_id"] == str(agent.pk)
    assert path["category"] == first["result"]["intent"]
    assert path["trace_summary"]["decision"] == "edit"
    assert path["trace_summary"]["steps"][0].startswith("classify:")
    assert path["usage_count"] == 0

    again = _ask(owner, agent, "customer-2", QUESTION)
    assert again["status"] == "completed", again
    assert again["result"]["escalated"] is False
    assert again["result"]["content"] == EDITED
    assert _golden_path_ids(again) == [path["id"]]
    assert again["result"]["confidence"] >= 0.9

    paraphrased = _ask(owner, agent, "customer-3", PARAPHRASE)
    assert paraphrased["status"] == "completed", paraphrased
    assert paraphrased["result"]["content"] == EDITED
    assert _golden_path_ids(paraphrased) == [path["id"]]

    different = _ask(owner, agent, "customer-4", UNRELATED)
    assert different["status"] == "awaiting_review", different
    assert different["result"]["content"] != EDITED

    used = owner.get(f"/api/v1/learning/golden-paths/{path['id']}").json()
    assert used["usage_count"] == 2
    assert used["last_used_at"] is not None

    # A reviewer takes it out of use: the question escalates again.
    off = reviewer.post(f"/api/v1/learning/golden-paths/{path['id']}/deactivate")
    assert off.status_code == 200, off.json()
    assert off.json()["is_active"] is False
    assert _ask(owner, agent, "customer-5", QUESTION)["status"] == "awaiting_review"


def test_two_tenants_with_the_same_question_each_get_their_own_golden_path(
    owner: Persona, agent: Agent, reviewer: Member, celery_worker_app: object
) -> None:
    other = make_persona("Globex", tier="professional")
    other_agent = make_agent(other)
    other_reviewer = make_member(other.tenant, "gus", "reviewer")

    _escalate_and_edit(owner, agent, reviewer, EDITED, "customer-1")
    # The other tenant has learnt nothing yet: the same question still escalates there.
    assert _ask(other, other_agent, "customer-1", QUESTION)["status"] == "awaiting_review"
    globex_answer = "Email changes are handled by your workspace admin under Admin > Users."
    items = other.get(QUEUE).json()["results"]
    assert len(items) == 1
    assert (
        other_reviewer.respond(items[0]["id"], decision="edit", response=globex_answer).status_code
        == 200
    )
    _learnt(items[0]["run_id"])

    acme = _ask(owner, agent, "customer-9", QUESTION)
    globex = _ask(other, other_agent, "customer-9", QUESTION)
    assert acme["result"]["content"] == EDITED
    assert globex["result"]["content"] == globex_answer
    with tenant_scope(owner.tenant.pk):
        acme_ids = {str(p) for p in GoldenPath.objects.values_list("pk", flat=True)}
    with tenant_scope(other.tenant.pk):
        globex_ids = {str(p) for p in GoldenPath.objects.values_list("pk", flat=True)}
    assert len(acme_ids) == len(globex_ids) == 1
    assert set(_golden_path_ids(acme)) == acme_ids
    assert set(_golden_path_ids(globex)) == globex_ids

    for persona, mine, theirs in ((owner, acme_ids, globex_ids), (other, globex_ids, acme_ids)):
        found = persona.get(f"/api/v1/learning/golden-paths/search?{urlencode({'q': QUESTION})}")
        assert found.status_code == 200, found.json()
        ids = {hit["id"] for hit in found.json()["results"]}
        assert ids == mine
        assert found.json()["results"][0]["similarity"] > 0.99
        # The other tenant's golden path is as unknown as a missing one.
        (foreign,) = theirs
        assert persona.get(f"/api/v1/learning/golden-paths/{foreign}").status_code == 404
