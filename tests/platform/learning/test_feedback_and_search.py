"""Feedback, golden-path search and curation through the API: what they learn, who may
curate, and bad input that changes nothing."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from agentflow import services as run_services
from agentflow.models import Agent, AgentSession, Message, Run
from governance.audit import Actor
from hitl.models import HITLRequest
from learning import golden_paths
from learning.models import Feedback, GoldenPath
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written
from tests.platform.hitl.conftest import Member, eventually, make_member
from tests.platform.hitl.conftest import reviewer as reviewer

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = Actor.system("tests")
CONFIDENT = "How do I reset my password?"  # answered from the reset article
UNSURE = "Can I change the email address of my account?"  # nothing to answer from
FEEDBACK = "/api/v1/learning/feedback"
SEARCH = "/api/v1/learning/golden-paths/search"


def _run(agent: Agent, message: str, user_id: str = "customer-1") -> Run:
    """A real run through the offline pipeline, executed in this thread."""
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id=user_id)
        run = Run.objects.create(agent=agent, session=session, user_id=user_id, input=message)
        run_services.execute_run(str(run.pk))
        run.refresh_from_db()
    return run


def _paths(persona: Persona) -> list[GoldenPath]:
    with tenant_scope(persona.tenant.pk):
        return list(GoldenPath.objects.order_by("created_at"))


def test_high_feedback_on_an_answer_makes_a_golden_path_and_low_feedback_does_not(
    owner: Persona, agent: Agent
) -> None:
    liked, disliked = _run(agent, CONFIDENT, "c1"), _run(agent, "where do I request a refund", "c2")
    assert liked.status == disliked.status == "completed"

    low = owner.post(FEEDBACK, {"run_id": str(disliked.pk), "rating": 2, "comment": "meh"})
    assert low.status_code == 201, low.json()
    assert low.json()["score"] == 0.25
    assert low.json()["golden_path_id"] is None
    assert _paths(owner) == []

    with tenant_scope(owner.tenant.pk):
        answer = Message.objects.get(run=liked, role="assistant")
    high = owner.post(
        FEEDBACK,
        {"run_id": str(liked.pk), "message_id": str(answer.pk), "rating": 5, "source": "zendesk"},
    )
    assert high.status_code == 201, high.json()
    body = high.json()
    assert body["kind"] == "rating"
    assert body["score"] == 1.0
    assert body["message_id"] == str(answer.pk)
    (path,) = _paths(owner)
    assert body["golden_path_id"] == str(path.pk)
    assert path.source == "feedback"
    assert path.question == CONFIDENT
    assert path.answer == liked.result["content"]
    assert path.category == liked.result["intent"]


def test_feedback_on_a_golden_path_answer_moves_its_score(owner: Persona, agent: Agent) -> None:
    with tenant_scope(owner.tenant.pk):
        path = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=UNSURE,
            answer="Open Settings > Profile and change it there.",
            source="edited",
            score=1.0,
        )
    assert path is not None
    run = _run(agent, UNSURE)
    assert [s["id"] for s in run.result["sources"]] == [str(path.pk)]
    down = owner.post(FEEDBACK, {"run_id": str(run.pk), "thumbs": "down"})
    assert down.status_code == 201, down.json()
    assert down.json()["golden_path_id"] == str(path.pk)
    path.refresh_from_db()
    assert path.score == pytest.approx(0.8)
    assert len(_paths(owner)) == 1  # feedback on a golden path's answer adds no other


def test_near_duplicates_merge_and_a_rewrite_outranks_an_approval(
    owner: Persona, agent: Agent
) -> None:
    with tenant_scope(owner.tenant.pk):
        first = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=UNSURE,
            answer="Edited one.",
            source="edited",
            score=1.0,
        )
        again = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=UNSURE + " ",
            answer="Edited two.",
            source="edited",
            score=1.0,
        )
        approved = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=UNSURE,
            answer="The agent's.",
            source="approved",
            score=0.9,
        )
        other_category = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=UNSURE,
            answer="Billing's.",
            source="edited",
            score=1.0,
            category="BILLING",
        )
    assert first is not None
    assert again is not None
    assert approved is not None
    assert other_category is not None
    assert first.pk == again.pk == approved.pk
    assert other_category.pk != first.pk
    first.refresh_from_db()
    assert first.merged_count == 3
    assert first.answer == "Edited two."  # the newest rewrite; an approval does not replace it
    assert first.source == "edited"


def test_search_ranks_by_similarity_and_deactivation_is_for_reviewers(
    owner: Persona, agent: Agent, reviewer: Member
) -> None:
    with tenant_scope(owner.tenant.pk):
        for question, answer in (
            (UNSURE, "Settings > Profile."),
            ("Do you ship to Canada?", "Yes, in 5 days."),
            ("How do I delete my account?", "Write to privacy@example.com."),
        ):
            golden_paths.record_outcome(
                actor=ACTOR,
                agent=agent,
                question=question,
                answer=answer,
                source="edited",
                score=1.0,
            )
    found = owner.get(f"{SEARCH}?{urlencode({'q': 'change my account email address', 'limit': 2})}")
    assert found.status_code == 200, found.json()
    results = found.json()["results"]
    assert len(results) == 2
    assert results[0]["question"] == UNSURE
    assert results[0]["similarity"] >= results[1]["similarity"]

    target = results[0]["id"]
    viewer = make_member(owner.tenant, "vera", "viewer")
    refused = viewer.post(f"/api/v1/learning/golden-paths/{target}/deactivate")
    assert refused.status_code == 403
    done = reviewer.post(f"/api/v1/learning/golden-paths/{target}/deactivate")
    assert done.status_code == 200
    assert done.json()["is_active"] is False
    after = owner.get(f"{SEARCH}?{urlencode({'q': UNSURE})}").json()["results"]
    assert target not in [hit["id"] for hit in after]
    with_inactive = owner.get(f"{SEARCH}?{urlencode({'q': UNSURE, 'include_inactive': 'true'})}")
    assert with_inactive.json()["results"][0]["id"] == target
    listed = owner.get("/api/v1/learning/golden-paths?active=false").json()
    assert [p["id"] for p in listed["results"]] == [target]
    back = reviewer.post(f"/api/v1/learning/golden-paths/{target}/activate")
    assert back.json()["is_active"] is True


def test_a_decision_whose_golden_path_cannot_be_recorded_still_stands_and_is_retried(
    owner: Persona,
    agent: Agent,
    reviewer: Member,
    celery_worker_app: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = _run(agent, UNSURE)
    assert run.status == "awaiting_review"
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run=run)
    real, calls = golden_paths.embed_query, []

    def embedder_down_once(text: str) -> Any:
        calls.append(text)
        if len(calls) == 1:
            raise ConnectionError("embedding service unavailable")
        return real(text)

    monkeypatch.setattr(golden_paths, "embed_query", embedder_down_once)
    decided = reviewer.respond(request.pk, decision="edit", response="Settings > Profile.")
    assert decided.status_code == 200, decided.json()
    run.refresh_from_db()
    assert run.status == "completed"
    path = eventually(lambda: _paths(owner), what="the retried golden path")[0]
    assert path.answer == "Settings > Profile."
    assert path.trace_summary["runs"] == [str(run.pk)]
    assert len(calls) == 2


BAD_FEEDBACK = [
    ({"rating": 5}, "run_id"),  # no run
    ({"run_id": "not-a-uuid", "rating": 5}, "run_id"),
    ({"run_id": "{run}"}, "rating"),  # neither rating nor thumbs
    ({"run_id": "{run}", "rating": 5, "thumbs": "up"}, "rating"),  # both
    ({"run_id": "{run}", "rating": 0}, "rating"),
    ({"run_id": "{run}", "rating": 6}, "rating"),
    ({"run_id": "{run}", "rating": 4.5}, "rating"),
    ({"run_id": "{run}", "rating": "5"}, "rating"),  # strings are not numbers here
    ({"run_id": "{run}", "thumbs": "sideways"}, "thumbs"),
    ({"run_id": "{run}", "rating": 5, "comment": "x" * 4_001}, "comment"),
    ({"run_id": "{run}", "rating": 5, "stars": 5}, "stars"),  # unknown field
    ({"run_id": str(uuid.uuid4()), "rating": 5}, "run_id"),  # no such run
    ({"run_id": "{run}", "rating": 5, "message_id": str(uuid.uuid4())}, "message_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_FEEDBACK, ids=[f for _, f in BAD_FEEDBACK])
def test_bad_feedback_is_refused_and_changes_nothing(
    owner: Persona, agent: Agent, body: dict[str, Any], field: str
) -> None:
    run = _run(agent, CONFIDENT)
    payload = {k: (str(run.pk) if v == "{run}" else v) for k, v in body.items()}
    with nothing_written(owner.tenant):
        assert_field_errors(owner.post(FEEDBACK, payload), field)
    with tenant_scope(owner.tenant.pk):
        assert not Feedback.objects.exists()


def test_feedback_on_a_run_still_awaiting_review_is_a_conflict(
    owner: Persona, agent: Agent
) -> None:
    run = _run(agent, UNSURE)
    with nothing_written(owner.tenant):
        response = owner.post(FEEDBACK, {"run_id": str(run.pk), "rating": 5})
    assert response.status_code == 409
    assert response.json()["error_type"] == "run_not_completed"


def test_feedback_is_idempotent(owner: Persona, agent: Agent) -> None:
    run = _run(agent, CONFIDENT)
    body = {"run_id": str(run.pk), "rating": 5}
    first = owner.post(FEEDBACK, body, headers={"Idempotency-Key": "csat-1"})
    second = owner.post(FEEDBACK, body, headers={"Idempotency-Key": "csat-1"})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    other = owner.post(FEEDBACK, {**body, "rating": 1}, headers={"Idempotency-Key": "csat-1"})
    assert other.status_code == 422
    with tenant_scope(owner.tenant.pk):
        assert Feedback.objects.count() == 1
        assert GoldenPath.objects.count() == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 4_001}, "q"),
        ({"q": "hi", "limit": "0"}, "limit"),
        ({"q": "hi", "limit": "51"}, "limit"),
        ({"q": "hi", "limit": "ten"}, "limit"),
        ({"q": "hi", "agent_id": "nope"}, "agent_id"),
        ({"q": "hi", "agent_id": str(uuid.uuid4())}, "agent_id"),
        ({"q": "hi", "include_inactive": "yes"}, "include_inactive"),
    ],
)
def test_bad_search_queries_name_the_parameter(
    owner: Persona, query: dict[str, str], field: str
) -> None:
    assert_field_errors(owner.get(f"{SEARCH}?{urlencode(query)}"), field)


def test_erasing_an_end_user_removes_what_was_learnt_from_their_words(
    owner: Persona, agent: Agent
) -> None:
    from governance.erasure import erase_end_user

    mine, theirs = (
        _run(agent, CONFIDENT, "erase-me"),
        _run(agent, "where do I request a refund", "keep-me"),
    )
    for run in (mine, theirs):
        assert (
            owner.post(
                FEEDBACK, {"run_id": str(run.pk), "rating": 5, "comment": "great"}
            ).status_code
            == 201
        )
    assert len(_paths(owner)) == 2

    report = erase_end_user(actor=ACTOR, tenant=owner.tenant, user_id="erase-me")

    assert report.erased["learning_loop.golden_paths"] == 1
    assert report.erased["learning_loop.feedback"] == 1
    (kept,) = _paths(owner)
    assert kept.source_run_id == theirs.pk
    with tenant_scope(owner.tenant.pk):
        assert list(Feedback.objects.values_list("run_id", flat=True)) == [theirs.pk]
