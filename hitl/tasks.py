"""Celery entry points of HITL: notifications (thin; habit 5). The SLA sweep resumes runs,
so it lives with the run orchestration (``agentflow.tasks``) under its name ``hitl.sla_sweep``.

All run on the ``hitl`` queue (``hitl.*`` routing). The sweep serves every tenant and
is safe to run concurrently or twice; notification tasks re-fetch the request, tolerate
its disappearance and retry with exponential backoff (Celery's ``autoretry_for``).
"""

from __future__ import annotations

import smtplib
from typing import Any

import structlog
from celery import shared_task
from django.db import transaction

from agentflow.core import queueing
from agentflow.core.conf import setting_str
from agentflow.core.retrying import RetryFromSettings
from hitl import notifications
from hitl.models import HITLRequest
from hitl.policy import policy_of
from tenants.scoping import scoped_to_tenant

log = structlog.get_logger(__name__)


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
    if policy.notify_slack and setting_str("HITL_SLACK_WEBHOOK_URL"):
        transaction.on_commit(
            lambda: queueing.send(notify_slack_task, tenant_id, request_id, event)
        )


class NotifyTask(RetryFromSettings):
    """Notifications retry network errors, 429 and 5xx with backoff, then give up (logged)."""

    max_retries_setting = "HITL_NOTIFY_MAX_RETRIES"
    retry_seconds_setting = "HITL_NOTIFY_RETRY_SECONDS"
    retry_event = "hitl.notify_retry"
    gave_up_event = "hitl.notify_failed"
    channel = ""

    def log_fields(self, args: Any, kwargs: Any) -> dict[str, Any]:
        request_id = args[1] if len(args) > 1 else kwargs.get("request_id")
        return {"channel": self.channel, "request_id": request_id}


@shared_task(
    name="hitl.notify_email",
    base=NotifyTask,
    channel="email",
    autoretry_for=(smtplib.SMTPException, OSError),
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
@scoped_to_tenant
def notify_email_task(
    tenant_id: int,
    request_id: str,
    event: str,
    *,
    role: str,
    previous_assignee: int | None = None,
) -> str:
    request = HITLRequest.objects.filter(pk=request_id).first()
    if request is None:
        return "missing"
    email = notifications.compose_email(
        request, event, role=role, previous_assignee=previous_assignee
    )
    sent = notifications.send_email(email)  # errors: retried by NotifyTask, then logged
    log.info("hitl.notified", channel="email", request_id=request_id, hitl_event=event, sent=sent)
    return "sent" if sent else "no_recipients"


@shared_task(
    name="hitl.notify_slack",
    base=NotifyTask,
    channel="slack",
    autoretry_for=(notifications.SlackUnavailable,),
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
@scoped_to_tenant
def notify_slack_task(tenant_id: int, request_id: str, event: str) -> str:
    url = setting_str("HITL_SLACK_WEBHOOK_URL")
    if not url:
        return "disabled"
    request = HITLRequest.objects.filter(pk=request_id).first()
    if request is None:
        return "missing"
    text = notifications.slack_text(request, event)
    try:
        notifications.post_to_slack(url, text)
    except notifications.SlackRejected as exc:
        log.error("hitl.notify_failed", channel="slack", request_id=request_id, error=str(exc))
        return "rejected"
    log.info("hitl.notified", channel="slack", request_id=request_id, hitl_event=event)
    return "sent"
