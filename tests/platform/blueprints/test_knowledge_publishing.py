"""An approved knowledge draft is published as an article (issue 18): the librarian's draft
run waits for review; approving (or editing) it stores the article through the knowledge
service into the watched support agents' knowledge base, once, even under two concurrent
approvals; a rejection, a refused article or another tenant publishes nothing. A real worker
runs the runs; the respond endpoint decides."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import knowledge
from agentflow.models import Agent, KnowledgeChunk, KnowledgeDocument
from governance.models import AuditEvent
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, decide_concurrently, make_agent
from tests.platform.blueprints.test_knowledge_manager import (
    EXPORT_QUESTIONS,
    _approved,
    _create,
    _escalated,
    _run,
)

pytestmark = pytest.mark.django_db(transaction=True)

CSV_ANSWER = "Open Reports, pick the date range and click Export > CSV."
TOPIC = "draft: export data to CSV"


def drafted(owner: Persona) -> tuple[Agent, str, dict[str, Any], HITLRequest]:
    """(support agent, librarian id, the draft run, its review request)."""
    support = make_agent(owner)  # knows password resets and refunds
    _approved(support, "How do I export my data to CSV?", CSV_ANSWER)
    librarian = str(_create(owner).json()["id"])
    run = _run(owner, librarian, TOPIC)
    assert run["status"] == "awaiting_review", run
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
    return support, librarian, run, request


def respond(persona: Persona, request: HITLRequest, body: dict[str, Any]) -> Any:
    return persona.post(f"/api/v1/hitl/queue/{request.pk}/respond", body)


def chunk_texts(article: KnowledgeDocument) -> list[str]:
    return list(KnowledgeChunk.objects.filter(document=article).values_list("text", flat=True))


def articles(persona: Persona, agent: Agent) -> list[KnowledgeDocument]:
    with tenant_scope(persona.tenant.pk):
        return list(KnowledgeDocument.objects.filter(agent=agent).order_by("created_at"))


def test_an_approved_draft_is_published_and_closes_the_gap(
    owner: Persona, celery_worker_app: object
) -> None:
    support, librarian, run, request = drafted(owner)
    _escalated(support, EXPORT_QUESTIONS)
    before = _run(owner, librarian, "gaps")["result"]["metadata"]["output"]
    assert len(before["gaps"]) == 1  # nobody wrote about CSV exports yet

    response = respond(owner, request, {"decision": "approve"})
    assert response.status_code == 200, response.content

    *_known, article = articles(owner, support)
    assert article.title == "Export data to CSV"
    assert article.content_type == "text/markdown"
    with tenant_scope(owner.tenant.pk):
        text = "".join(
            KnowledgeChunk.objects.filter(document=article).values_list("text", flat=True)
        )
        hits = knowledge.search_knowledge(agent=support, query="export my reports to CSV", limit=1)
        result = owner.get(f"/api/v1/runs/{run['id']}/result").json()["result"]
        audit = AuditEvent.objects.filter(action="knowledge.published", target_id=str(article.pk))
        assert audit.count() == 1
    assert CSV_ANSWER in text
    assert hits[0].title == "Export data to CSV"
    assert result["published"] == [
        {"agent_id": str(support.pk), "document_id": str(article.pk), "title": article.title}
    ]
    after = _run(owner, librarian, "gaps")["result"]["metadata"]["output"]
    assert after["gaps"] == []  # the published article covers the questions
    # Also visible through the knowledge API, like any uploaded article.
    listed = owner.get(f"/api/v1/agents/{support.pk}/knowledge").json()["results"]
    assert "Export data to CSV" in [d["title"] for d in listed]


def test_an_edited_draft_publishes_the_reviewers_text_and_title(
    owner: Persona, celery_worker_app: object
) -> None:
    support, _librarian, _run_body, request = drafted(owner)
    edited = (
        "# Exporting reports as CSV\n\nGo to Reports > Export and choose CSV. Exports keep 90 days."
    )
    response = respond(owner, request, {"decision": "edit", "response": edited})
    assert response.status_code == 200, response.content
    *_known, article = articles(owner, support)
    assert article.title == "Exporting reports as CSV"
    with tenant_scope(owner.tenant.pk):
        text = " ".join(
            KnowledgeChunk.objects.filter(document=article).values_list("text", flat=True)
        )
    assert "Exports keep 90 days." in text
    assert CSV_ANSWER not in text


def test_two_concurrent_approvals_publish_once(owner: Persona, celery_worker_app: object) -> None:
    support, _librarian, _run_body, request = drafted(owner)
    known = len(articles(owner, support))
    codes = decide_concurrently(owner, request.pk, {"decision": "approve"})
    assert codes == [200, 409]
    assert len(articles(owner, support)) == known + 1
    assert respond(owner, request, {"decision": "approve"}).status_code == 409
    assert len(articles(owner, support)) == known + 1


def test_a_rejected_draft_publishes_nothing(owner: Persona, celery_worker_app: object) -> None:
    support, _librarian, _run_body, request = drafted(owner)
    known = len(articles(owner, support))
    response = respond(owner, request, {"decision": "reject", "reason": "too thin"})
    assert response.status_code == 200, response.content
    assert len(articles(owner, support)) == known


def test_a_draft_with_nowhere_to_go_is_refused_and_changes_nothing(
    owner: Persona, celery_worker_app: object
) -> None:
    support, _librarian, _run_body, request = drafted(owner)
    assert owner.delete(f"/api/v1/agents/{support.pk}").status_code == 204
    response = respond(owner, request, {"decision": "approve"})
    assert response.status_code == 422, response.content
    assert "decision" in response.json()["errors"]
    with tenant_scope(owner.tenant.pk):
        request.refresh_from_db()
        assert request.status == "pending"
        assert KnowledgeDocument.objects.count() == 0


def test_an_article_over_the_knowledge_quota_is_refused_and_changes_nothing(
    owner: Persona, celery_worker_app: object
) -> None:
    support, _librarian, _run_body, request = drafted(owner)
    known = len(articles(owner, support))
    with tenant_scope(owner.tenant.pk):
        used = sum(d.size_bytes for d in KnowledgeDocument.objects.all())
    owner.tenant.quota_overrides = {"knowledge_bytes": used + 10}
    owner.tenant.save(update_fields=["quota_overrides"])
    response = respond(owner, request, {"decision": "approve"})
    assert response.status_code == 429, response.content
    assert response.json()["error_type"] == "quota_exceeded"
    with tenant_scope(owner.tenant.pk):
        request.refresh_from_db()
    assert request.status == "pending"
    assert len(articles(owner, support)) == known


def test_another_tenant_can_neither_decide_nor_receive_the_article(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    theirs = make_agent(outsider)
    their_articles = len(articles(outsider, theirs))
    support, _librarian, _run_body, request = drafted(owner)
    assert respond(outsider, request, {"decision": "approve"}).status_code == 404
    assert respond(owner, request, {"decision": "approve"}).status_code == 200
    assert len(articles(outsider, theirs)) == their_articles
    assert articles(owner, support)[-1].title == "Export data to CSV"
