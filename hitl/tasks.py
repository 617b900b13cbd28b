"""Celery entry points of HITL: notifications (thin; habit 5). The SLA sweep resumes runs,
so it lives with the run orchestration (``agentflow.tasks``) under its name ``hitl.sla_sweep``.

All run on the ``hitl`` queue (``hitl.*`` routing). The sweep serves every tenant and
is safe to run concurrently or twice; notification tasks re-fetch the request, tolerate
its disappearance and retry with exponential backoff.
"""

from __future__ import annotations

import smtplib
from typing import Any

import structlog
from celery import Task, shared_task
from django.db import transaction

from agentflow.core import queueing
from hitl import notifications
from hitl.models import HITLRequest
from hitl.policy import options, policy_of
from tenants.context import tenant_scope

log = structlog.get_logger(__name__)


def _backoff(task: Task) -> float:
    base = float(options()["HITL_NOTIFY_RETRY_SECONDS"])
    return base * (2 ** int(task.request.retries))


def _max_retries() -> int:
    return int(options()["HITL_NOTIFY_MAX_RETRIES"])


def notify_on_commit(
    request: HITLRequest, event: str, *, role: str, previous_assignee: int | None
) -> None:
    """Schedule this event's notifications for when the current transaction commits."""
    policy = policy_of(request.policy)
    tenant_id, request_id = request.tenant_id, str(request.pk)
    # A broker that is down must not turn the committed decision into a 500: logged instead.
    if policy.notify_email:
        transaction.on_commit(
            lambda: queueing.send(
                notify_email_task,
                tenant_id,
                request_id,
                event,
                role=role,
                previous_assignee=previous_assignee,
            )
        )
    if policy.notify_slack and options()["HITL_SLACK_WEBHOOK_URL"]:
        transaction.on_commit(
            lambda: queueing.send(notify_slack_task, tenant_id, request_id, event)
        )


@shared_task(
    name="hitl.notify_email",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded below by HITL_NOTIFY_MAX_RETRIES, read at run time
)
def notify_email_task(
    self: Task,
    tenant_id: int,
    request_id: str,
    event: str,
    *,
    role: str,
    previous_assignee: int | None = None,
) -> str:
    with tenant_scope(int(tenant_id)):
        request = HITLRequest.objects.filter(pk=request_id).first()
        if request is None:
            return "missing"
        email = notifications.compose_email(
            request, event, role=role, previous_assignee=previous_assignee
        )
    try:
        sent = notifications.send_email(email)
    except (smtplib.SMTPException, OSError) as exc:
        return _retry_or_give_up(self, "email", request_id, exc)
    log.info("hitl.notified", channel="email", request_id=request_id, hitl_event=event, sent=sent)
    return "sent" if sent else "no_recipients"


@shared_task(
    name="hitl.notify_slack",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
)
def notify_slack_task(self: Task, tenant_id: int, request_id: str, event: str) -> str:
    url = options()["HITL_SLACK_WEBHOOK_URL"]
    if not url:
        return "disabled"
    with tenant_scope(int(tenant_id)):
        request = HITLRequest.objects.filter(pk=request_id).first()
        if request is None:
            return "missing"
        text = notifications.slack_text(request, event)
    try:
        notifications.post_to_slack(url, text)
    except notifications.SlackRejected as exc:
        log.error("hitl.notify_failed", channel="slack", request_id=request_id, error=str(exc))
        return "rejected"
    except notifications.SlackUnavailable as exc:
        return _retry_or_give_up(self, "slack", request_id, exc)
    log.info("hitl.notified", channel="slack", request_id=request_id, hitl_event=event)
    return "sent"


def _retry_or_give_up(task: Task, channel: str, request_id: str, exc: Exception) -> Any:
    if task.request.retries >= _max_retries():
        log.error(
            "hitl.notify_failed",
            channel=channel,
            request_id=request_id,
            attempts=task.request.retries + 1,
            error=str(exc),
        )
        return "failed"
    log.warning("hitl.notify_retry", channel=channel, request_id=request_id, error=str(exc))
    raise task.retry(exc=exc, countdown=_backoff(task))
