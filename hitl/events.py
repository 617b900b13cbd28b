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

from django.db import DEFAULT_DB_ALIAS, connection, models
from django.db.models.sql import InsertQuery

from agentflow.core.realtime import send_to_group_on_commit, tenant_group
from governance.audit import Actor, append
from hitl.models import HITLEvent, HITLRequest
from hitl.serializers import request_body
from tenants.scoping import TenantMismatch, require_tenant_id

LIVE_EVENTS = ("queued", "assigned", "unclaimed", "breached", "escalated", "decided")


def reload(request_id: Any) -> HITLRequest:
    return HITLRequest.objects.select_related("assignee", "decided_by").get(pk=request_id)


def _insert_sql(row: models.Model) -> tuple[str, list[Any]]:
    """The INSERT of one unsaved row, without RETURNING (the row carries its own key)."""
    meta = row._meta
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    query = InsertQuery(type(row))
    query.insert_values(fields, [row])
    sql, params = query.get_compiler(DEFAULT_DB_ALIAS).as_sql()[0]
    return sql, list(params)


def _stamp_tenant(row: HITLRequest | HITLEvent) -> None:
    """What ``TenantOwnedModel.save`` checks, for rows inserted by raw statement."""
    scoped = require_tenant_id()
    if row.tenant_id is None:
        row.tenant_id = scoped
    elif row.tenant_id != scoped:
        raise TenantMismatch(f"{type(row).__name__} of tenant {row.tenant_id} in {scoped}'s scope")


def create_with_history(
    request: HITLRequest,
    action: str,
    *,
    actor: Actor,
    at: datetime,
    detail: dict[str, Any],
    live: str | None = None,
) -> None:
    """Insert a new request and its first history entry in one statement (a data-modifying
    CTE; the history row's foreign key is checked at commit), then audit and publish as
    :func:`record` does."""
    history = _history(request, action, actor=actor, at=at, detail=detail)
    for row in (request, history):
        _stamp_tenant(row)
    request_sql, request_params = _insert_sql(request)
    history_sql, history_params = _insert_sql(history)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH request AS ({request_sql}) {history_sql}", [*request_params, *history_params]
        )
    request._state.adding, request._state.db = False, DEFAULT_DB_ALIAS
    _audit_and_publish(request, action, actor=actor, detail=detail, live=live)


def _history(
    request: HITLRequest, action: str, *, actor: Actor, at: datetime, detail: dict[str, Any]
) -> HITLEvent:
    return HITLEvent(
        request=request,
        action=action,
        actor_type=actor.type,
        actor_id=str(actor.id),
        detail=detail,
        at=at,
    )


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
    _history(request, action, actor=actor, at=at, detail=detail).save(force_insert=True)
    _audit_and_publish(request, action, actor=actor, detail=detail, live=live)


def _audit_and_publish(
    request: HITLRequest,
    action: str,
    *,
    actor: Actor,
    detail: dict[str, Any],
    live: str | None,
) -> None:
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
