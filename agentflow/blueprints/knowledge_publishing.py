"""An approved knowledge draft becomes a knowledge article (issue 18).

A ``knowledge_manager_agent`` draft run waits for review with the draft as its proposed
answer. When a reviewer approves it (or edits it: the edited text is the article), the
article is stored through the knowledge service the API uses (`agentflow.knowledge`) into
the knowledge base of each agent the librarian manages (``watched_agents``; empty: every
``support_agent`` of the tenant), so the gap it was drafted for is covered.

Exactly once: the article is prepared (validated, chunked, embedded) before the decision's
transaction, so no lock waits on the embedder, and stored inside it, after the decision won
its compare-and-set. A second approval (concurrent or later) loses that compare-and-set (409)
and stores nothing; a document refused (too large, over the tenant's quota) refuses the
decision, which then changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentflow import knowledge
from agentflow.blueprints.knowledge_manager import TenantKnowledge
from agentflow.core.api.exceptions import ContractError, unprocessable
from agentflow.models import Agent, Run
from governance.audit import Actor, append
from hitl.models import Decision, HITLRequest
from tenants.context import tenant_scope

__all__ = ["KNOWLEDGE_MANAGER", "Publication", "prepare_publication", "publish"]

KNOWLEDGE_MANAGER = "knowledge_manager_agent"
_CONTENT_TYPE = "text/markdown"


@dataclass(frozen=True, slots=True)
class Publication:
    """A draft ready to store: the article and the agents whose knowledge it joins."""

    run_id: Any
    request_id: Any
    agents: list[Agent]
    document: knowledge.PreparedDocument


def _draft_output(run: Run) -> dict[str, Any] | None:
    output = ((run.result or {}).get("metadata") or {}).get("output") or {}
    if output.get("task") != "draft" or not output.get("draft"):
        return None  # a gaps, duplicates or stale report: nothing to publish
    return dict(output)


def _title(text: str, drafted: str) -> str:
    """The article's own ``# heading`` (a reviewer may have retitled it), else the draft's."""
    first = text.lstrip().split("\n", 1)[0].strip()
    return first[2:].strip() if first.startswith("# ") and first[2:].strip() else drafted


def _refusal(exc: knowledge.KnowledgeError, field: str) -> ContractError:
    """The knowledge API's answers (413, 429), the rest a 422 naming what to change."""
    if isinstance(exc, knowledge.KnowledgeTooLarge):
        return ContractError(str(exc), status_code=413, error_type="payload_too_large")
    if isinstance(exc, knowledge.KnowledgeQuotaExceeded):
        return ContractError(
            str(exc),
            status_code=429,
            error_type="quota_exceeded",
            extra={"limit": "knowledge_bytes", "resets_at": None},
        )
    return unprocessable(f"The article cannot be published: {exc}", {field: [str(exc)]})


def prepare_publication(
    request: HITLRequest, decision: str, response: str | None
) -> Publication | None:
    """The article an approval or edit of a knowledge draft publishes (None: the request is
    about something else, or it is rejected). Raises the 4xx a refused article is."""
    if decision not in (Decision.APPROVE, Decision.EDIT) or request.context.get("after_the_fact"):
        return None
    with tenant_scope(request.tenant_id):
        run = Run.objects.select_related("agent").filter(pk=request.run_id).first()
        if run is None or run.agent.blueprint != KNOWLEDGE_MANAGER:
            return None
        output = _draft_output(run)
        if output is None:
            return None
        watched = [str(agent_id) for agent_id in run.agent.config.get("watched_agents") or ()]
        ids = TenantKnowledge(run.agent.pk, watched).managed_agent_ids()
        agents = list(Agent.objects.filter(pk__in=ids).order_by("created_at"))
    field = "response" if decision == Decision.EDIT else "decision"
    if not agents:
        reason = "no agent to publish the article to: watched_agents names none of this tenant"
        raise unprocessable(f"The article cannot be published: {reason}", {field: [reason]})
    text = response if decision == Decision.EDIT and response else str(output["draft"])
    title = _title(text, str(output.get("title") or output.get("topic") or "Article"))
    try:
        document = knowledge.prepare_document(title=title, content_type=_CONTENT_TYPE, text=text)
    except knowledge.KnowledgeError as exc:
        raise _refusal(exc, field) from exc
    return Publication(run.pk, request.pk, agents, document)


def publish(publication: Publication, *, actor: Actor, tenant_id: int) -> list[dict[str, str]]:
    """Store the article in each agent's knowledge base, note it on the run's result and in
    the audit log; inside the decision's transaction and tenant scope, after it won and
    before the run resumes (which keeps the result's ``published``)."""
    published = []
    for agent in publication.agents:
        try:
            stored = knowledge.store_document(agent=agent, prepared=publication.document)
        except knowledge.KnowledgeError as exc:
            raise _refusal(exc, "decision") from exc
        published.append(
            {"agent_id": str(agent.pk), "document_id": str(stored.pk), "title": stored.title}
        )
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="knowledge.published",
            target_type="knowledge_document",
            target_id=stored.pk,
            changes={
                "agent": str(agent.pk),
                "title": stored.title,
                "run_id": str(publication.run_id),
                "request_id": str(publication.request_id),
            },
        )
    run = Run.objects.select_for_update().get(pk=publication.run_id)
    Run.objects.filter(pk=run.pk).update(result={**(run.result or {}), "published": published})
    return published
