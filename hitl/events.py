"""A request's history, its audit events and its live events, written together.

Every change of a request leaves three traces inside the change's transaction: a
:class:`HITLEvent` (``GET queue/{id}/history``), an audit event (the tenant's hash
chain) and, on commit only, a live event to the tenant's Channels group
(``hitl.queued|assigned|unclaimed|breached|escalated|decided``) carrying the request
exactly as the queue API shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentflow.core.realtime import send_to_group_on_commit, tenant_group
from governance.audit import Actor, append
from hitl.models import HITLEvent, HITLRequest
from hitl.serializers import request_body

LIVE_EVENTS = ("queued", "assigned", "unclaimed", "breached", "escalated", "decided")


def reload(request_id: Any) -> HITLRequest:
    return HITLRequest.objects.select_related("assignee", "decided_by").get(pk=request_id)


def record(
    request: HITLRequest,
    action: str,
    *,
    actor: Actor,
    at: datetime,
    detail: dict[str, Any] | None = None,
    live: str | None = None,
) -> None:
    """History + audit now, the live event ``hitl.<live>`` when the transaction commits."""
    detail = detail or {}
    HITLEvent.objects.create(
        request=request,
        action=action,
        actor_type=actor.type,
        actor_id=str(actor.id),
        detail=detail,
        at=at,
    )
    append(
        tenant_id=request.tenant_id,
        actor=actor,
        action=f"hitl.{action}",
        target_type="hitl_request",
        target_id=request.pk,
        changes={"run_id": str(request.run_id), **detail},
        seal_now=False,  # on the run and review path: the sealer chains it (no chain lock)
    )
    if live is not None:
        publish(request, live)


def publish(request: HITLRequest, event: str) -> None:
    if event not in LIVE_EVENTS:
        raise ValueError(f"unknown live event {event!r}")
    payload = {"type": f"hitl.{event}", "request": request_body(request)}
    send_to_group_on_commit(tenant_group(request.tenant_id), payload)
