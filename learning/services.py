"""The learning app's public functions: what other apps (and its own views and tasks) call.

Activity stream:
* :func:`record_event` — persist an internal event in the caller's transaction and
  publish it to the tenant's stream on commit;
* the stream's consumer (graph, rules that start runs) is :mod:`learning.processing`, in
  the run orchestration layer above this module.

Rules: :func:`create_rule`, :func:`update_rule`, :func:`delete_rule` (audited).

Internal events recorded here: every run that settles (``run.completed``,
``run.escalated``, ``run.failed``, ``run.cancelled``, from the run's recorded state
transition) and every HITL decision (``hitl.decided``). Golden paths call
``record_event(tenant_id, "golden_path.created", {...})``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from django.db import IntegrityError, connection, transaction

from agentflow.core import queueing
from agentflow.core.context import current_correlation_id
from agentflow.models import Run
from governance.audit import Actor, append
from learning import activity
from learning.loop import count_golden_path_uses
from learning.models import (
    ActivityEvent,
    ActivitySource,
    EventRule,
)
from tenants.context import tenant_scope

log = structlog.get_logger(__name__)

RUN_EVENT_KINDS = {
    "completed": "run.completed",
    "awaiting_review": "run.escalated",
    "failed": "run.failed",
    "cancelled": "run.cancelled",
}
ANSWER_EXCERPT = 300
# The task that replies to a rule's source (learning.tasks), sent by name: the task module
# sits above this one.
REPLY_TASK = "webhooks.reply"


# --- the activity stream --------------------------------------------------------------------


def publish_on_commit(tenant_id: int, event_id: Any) -> None:
    """Publish after the surrounding transaction commits; Redis down only delays it."""
    transaction.on_commit(lambda: activity.publish(tenant_id, [str(event_id)]), robust=True)


def record_event(
    tenant_id: int,
    kind: str,
    payload: dict[str, Any],
    source: str = ActivitySource.INTERNAL,
    *,
    occurred_at: datetime | None = None,
    dedup_key: str = "",
) -> ActivityEvent:
    """Persist one activity event (in the caller's transaction) and publish it on commit.

    With ``dedup_key`` recording is idempotent: the same key for the same tenant and
    source returns the event already recorded.
    """
    # No savepoint: a keyed insert cannot fail on its duplicate (ON CONFLICT DO NOTHING);
    # an unkeyed one keeps its own, as the only statement here that may fail.
    with tenant_scope(tenant_id), transaction.atomic(savepoint=False):
        event = ActivityEvent(
            source=source,
            kind=kind[:100],
            payload=payload,
            dedup_key=dedup_key[:200],
            correlation_id=current_correlation_id() or "",
            occurred_at=occurred_at or datetime.now(UTC),
        )
        if dedup_key:
            if not _insert_once(event, tenant_id):
                return ActivityEvent.objects.get(source=source, dedup_key=dedup_key[:200])
        else:
            with transaction.atomic():
                event.save(force_insert=True)
        publish_on_commit(tenant_id, event.pk)
    return event


# The key's unique index is partial (dedup_key <> ''): ON CONFLICT names it to infer it.
_INSERT_ONCE_SQL = """
INSERT INTO learning_activityevent ({columns}) VALUES ({placeholders})
ON CONFLICT (tenant_id, source, dedup_key) WHERE dedup_key <> '' DO NOTHING
RETURNING created_at
"""


def _insert_once(event: ActivityEvent, tenant_id: int) -> bool:
    """Insert ``event`` unless its dedup key was recorded already: one statement, no
    savepoint (a duplicate is not an error that would abort the caller's transaction)."""
    event.tenant_id = tenant_id
    fields = [f for f in ActivityEvent._meta.concrete_fields if f.attname != "created_at"]
    sql = _INSERT_ONCE_SQL.format(
        columns=", ".join(str(field.column) for field in fields),
        placeholders=", ".join("%s" for _ in fields),
    )
    params = [field.get_db_prep_save(getattr(event, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone()
    if inserted is None:
        return False
    event.created_at = inserted[0]
    event._state.adding = False
    event._state.db = connection.alias
    return True


# --- internal events ------------------------------------------------------------------------


def _run_payload(run_id: Any, from_status: str, reason: str) -> tuple[int, dict[str, Any]] | None:
    run = (
        Run.unscoped.filter(pk=run_id)
        .values(
            "tenant_id",
            "agent_id",
            "agent__name",
            "agent__blueprint",
            "user_id",
            "priority",
            "result",
            "metadata",
        )
        .first()
    )
    if run is None:
        return None
    return int(run["tenant_id"]), _payload(run_id, dict(run), from_status, reason)


def _payload_of(run: Run, from_status: str, reason: str) -> tuple[int, dict[str, Any]]:
    """The same payload from the caller's copy of the run (as the transition wrote it)."""
    values = {
        "agent_id": run.agent_id,
        "agent__name": run.agent.name,
        "agent__blueprint": run.agent.blueprint,
        "user_id": run.user_id,
        "priority": run.priority,
        "result": run.result,
        "metadata": run.metadata,
    }
    return int(run.tenant_id), _payload(run.pk, values, from_status, reason)


def _payload(run_id: Any, run: dict[str, Any], from_status: str, reason: str) -> dict[str, Any]:
    result = run["result"] or {}
    metadata = run["metadata"] or {}
    payload: dict[str, Any] = {
        "run_id": str(run_id),
        "agent_id": str(run["agent_id"]),
        "agent_name": run["agent__name"],
        "blueprint": run["agent__blueprint"],
        "user_id": run["user_id"],
        "priority": run["priority"],
        "from_status": from_status,
        "reason": reason,
        "intent": result.get("intent"),
        "confidence": result.get("confidence"),
        "thread_id": result.get("thread_id"),
        "answer": str(result.get("content") or "")[:ANSWER_EXCERPT],
        "sources": [
            {"kind": s.get("kind"), "id": s.get("id"), "title": s.get("title")}
            for s in result.get("sources") or []
            if isinstance(s, dict)
        ][:10],
        "review": (result.get("review") or {}).get("decision"),
    }
    for key in ("activity_event_id", "rule_id", "customer_key", "ticket_key", "ticket_label"):
        if metadata.get(key):
            payload[key] = metadata[key]
    return payload


def record_run_settled(
    run_id: Any, to_status: str, *, from_status: str, reason: str, run: Run | None = None
) -> None:
    """A run changed status (called by the run service's transition, and by the review
    orchestration for a review's resumption): when it settled, record its event and count
    the golden paths its answer used (inside the caller's transaction, never breaking it;
    the run is read once for both, or not at all when the caller passes it as written,
    its agent loaded)."""
    kind = RUN_EVENT_KINDS.get(to_status)
    if kind is None:
        return
    found: tuple[int, dict[str, Any]] | None = None
    try:
        # No savepoint: what can fail here is Python before any SQL; the event's insert
        # cannot fail on a duplicate (record_event), and its values were checked already
        # (the run row holds the same result, the correlation id is validated).
        with transaction.atomic(savepoint=False):
            found = (
                _run_payload(run_id, from_status, reason)
                if run is None
                else _payload_of(run, from_status, reason)
            )
            if found is None:
                return
            tenant_id, payload = found
            record_event(tenant_id, kind, payload, dedup_key=f"{kind}:{run_id}")
            recorded = True
    except Exception:
        # The run's own state change must not fail because the stream could not record it.
        log.exception("activity.run_event_failed", run_id=str(run_id))
        if found is None:
            return
        recorded = False
    if kind != "run.completed":
        return

    count_golden_path_uses(tenant_id, payload)
    if recorded and payload.get("rule_id"):
        run_id = str(run_id)
        transaction.on_commit(lambda: _enqueue_reply(tenant_id, run_id), robust=True)


def _enqueue_reply(tenant_id: int, run_id: str) -> None:
    queueing.by_name(REPLY_TASK).delay(tenant_id, run_id)


def record_review_decided(request: Any) -> None:
    """A HITL request was decided (by a reviewer or its SLA): its ``hitl.decided`` event, in
    the decision's transaction (``agentflow.orchestration`` calls it; never breaks it)."""
    payload = {
        "request_id": str(request.pk),
        "run_id": str(request.run_id),
        "decision": request.decision,
        "status": request.status,
        "intent": request.intent,
        "priority": request.priority,
        "decided_by": request.decided_by_id,
    }
    try:
        with transaction.atomic():
            record_event(
                request.tenant_id, "hitl.decided", payload, dedup_key=f"hitl.decided:{request.pk}"
            )
    except Exception:
        log.exception("activity.review_event_failed", request_id=str(request.pk))


# --- rules ------------------------------------------------------------------------------------

RULE_FIELDS = ("name", "event_kind", "conditions", "agent", "priority", "reply_url", "enabled")


def _rule_changes(rule: EventRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "event_kind": rule.event_kind,
        "conditions": rule.conditions,
        "agent_id": str(rule.agent_id),
        "priority": rule.priority,
        "reply_url": bool(rule.reply_url),  # whether, not where: URLs may embed tokens
        "enabled": rule.enabled,
    }


class DuplicateRuleName(ValueError):
    """Another rule of the tenant already has this name (HTTP 409)."""


def create_rule(*, actor: Actor, tenant_id: int, **fields: Any) -> EventRule:
    with tenant_scope(tenant_id), transaction.atomic():
        rule = EventRule(**{k: v for k, v in fields.items() if k in RULE_FIELDS})
        try:
            with transaction.atomic():
                rule.save(force_insert=True)
        except IntegrityError:
            raise DuplicateRuleName(fields.get("name")) from None
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="event_rule.created",
            target_type="event_rule",
            target_id=rule.pk,
            changes=_rule_changes(rule),
        )
    return rule


def update_rule(*, actor: Actor, rule: EventRule, **fields: Any) -> EventRule:
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        for name, value in fields.items():
            if name in RULE_FIELDS:
                setattr(rule, name, value)
        try:
            with transaction.atomic():
                rule.save()
        except IntegrityError:
            raise DuplicateRuleName(fields.get("name")) from None
        append(
            tenant_id=rule.tenant_id,
            actor=actor,
            action="event_rule.updated",
            target_type="event_rule",
            target_id=rule.pk,
            changes=_rule_changes(rule),
        )
    return rule


def delete_rule(*, actor: Actor, rule: EventRule) -> None:
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        append(
            tenant_id=rule.tenant_id,
            actor=actor,
            action="event_rule.deleted",
            target_type="event_rule",
            target_id=rule.pk,
            changes={"name": rule.name},
        )
        rule.delete()
