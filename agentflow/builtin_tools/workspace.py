"""The built-ins over the platform's own data: ``knowledge_search`` and ``handoff_to_human``.

Both run their ORM work in a thread (``sync_to_async``, as the Django stores do) inside the
tool context's tenant scope, so the scoped managers see only that tenant's rows: an agent or
run id of another tenant is "not found", never data.
"""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction

from agentflow import knowledge
from agentflow.builtin_tools.config import BuiltinToolContext
from agentflow.kernel.tools import Tool, ToolError
from agentflow.models import Agent, Run, RunStatus
from governance.audit import Actor
from hitl.models import OPEN_STATUSES, HITLRequest, Kind, Priority
from hitl.services import request_review
from tenants.context import tenant_scope

__all__ = ["handoff_tool", "knowledge_search_tool"]

HANDOFF_ACTOR = Actor.system("tool:handoff_to_human")


# --------------------------------------------------------------------------- knowledge_search


def knowledge_search_tool(ctx: BuiltinToolContext) -> Tool:
    def search(query: str, limit: int) -> list[dict[str, Any]]:
        with tenant_scope(ctx.tenant_id):
            agent = Agent.objects.filter(id=ctx.agent_id).first()
            if agent is None:
                raise ToolError("knowledge_search: the agent does not exist")
            hits = knowledge.search_knowledge(agent=agent, query=query, limit=limit)
        return [
            {"id": hit.key, "title": hit.title, "text": hit.text, "score": round(hit.score, 4)}
            for hit in hits
        ]

    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        results = await sync_to_async(search)(arguments["query"], arguments.get("limit", 5))
        return {"results": results}

    return Tool(
        id="knowledge_search",
        handler=call,
        description="Search this agent's knowledge base; the best passages first.",
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 2000},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "title": {"type": "string"},
                            "text": {"type": "string"},
                            "score": {"type": "number"},
                        },
                        "required": ["id", "title", "text", "score"],
                    },
                }
            },
            "required": ["results"],
        },
        required_permissions="read",
        safety_level="safe",
        timeout=15.0,
        source="builtin",
    )


# --------------------------------------------------------------------------- handoff_to_human


def _queued(request: HITLRequest, status: str) -> dict[str, Any]:
    return {
        "request_id": str(request.pk),
        "status": status,
        "required_role": request.required_role,
        "sla_deadline": request.sla_deadline.isoformat() if request.sla_deadline else None,
    }


def _hand_off(ctx: BuiltinToolContext, run_id: str, reason: str, priority: str | None) -> Any:
    with tenant_scope(ctx.tenant_id):
        run = Run.objects.filter(pk=run_id, agent_id=ctx.agent_id).first()
        if run is None:
            raise ToolError(f"handoff_to_human: no run {run_id} of this agent")
        if run.status == RunStatus.CANCELLED:
            raise ToolError("handoff_to_human: the run was cancelled")
        result = dict(run.result or {})
        # What the customer was told, if anything yet, is what the reviewer sees.
        delivered = result.get("content") if run.status == RunStatus.COMPLETED else ""
        result["proposed_answer"] = delivered or ""
        try:
            with transaction.atomic():  # a savepoint: request_review writes without one
                # After the fact: the run goes on (or has ended) with its own reply, and the
                # reviewer's answer joins the conversation as a follow-up; a run that ends
                # up awaiting review resumes on the decision all the same (finish_review).
                request = request_review(
                    run=run,
                    result=result,
                    actor=HANDOFF_ACTOR,
                    kind=Kind.MANUAL,
                    priority=priority,
                    reason=reason,
                    after_the_fact=True,
                )
        except IntegrityError:  # one open request per run: the run is with a human already
            existing = HITLRequest.objects.filter(run=run, status__in=OPEN_STATUSES).first()
            if existing is None:
                raise
            return _queued(existing, "already_in_review")
        return _queued(request, "queued")


def handoff_tool(ctx: BuiltinToolContext) -> Tool:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            run_id = str(uuid.UUID(arguments["run_id"]))
        except ValueError:
            raise ToolError("handoff_to_human: run_id is not a run id") from None
        result: dict[str, Any] = await sync_to_async(_hand_off)(
            ctx, run_id, arguments["reason"], arguments.get("priority")
        )
        return result

    return Tool(
        id="handoff_to_human",
        handler=call,
        description=(
            "Hand the conversation to a human: queue the run for review with the reason. "
            "run_id is the current run's id (the platform fills it in)."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "run_id": {"type": "string", "format": "uuid"},
                "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
                "priority": {"enum": list(Priority.values)},
            },
            "required": ["run_id", "reason"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {
                "request_id": {"type": "string"},
                "status": {"enum": ["queued", "already_in_review"]},
                "required_role": {"type": "string"},
                "sla_deadline": {"type": ["string", "null"]},
            },
            "required": ["request_id", "status"],
        },
        required_permissions="execute",
        safety_level="safe",
        timeout=15.0,
        source="builtin",
    )
