"""Celery entry points of HITL: the SLA sweep and notifications (thin; habit 5).

All run on the ``hitl`` queue (``hitl.*`` routing). The sweep serves every tenant and
is safe to run concurrently or twice; notification tasks re-fetch the request, tolerate
its disappearance and retry with exponential backoff.
"""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from typing import Any

import structlog
from celery import Task, shared_task

from agentflow import orchestration
from hitl import notifications
from hitl.models import HITLRequest
from hitl.policy import options
from tenants.scoping import scoped_to_tenant

log = structlog.get_logger(__name__)


@shared_task(name="hitl.sla_sweep", acks_late=True, ignore_result=True, max_retries=0)
def sla_sweep_task() -> dict[str, int]:
    # An entry point, above the run-orchestration layer: an expiry resumes the run and is
    # recorded by the orchestrator (activity), like a reviewer's decision.
    return orchestration.expire_overdue_reviews(datetime.now(UTC)).as_dict()


def _backoff(task: Task) -> float:
    base = float(options()["HITL_NOTIFY_RETRY_SECONDS"])
    return base * (2 ** int(task.request.retries))


def _max_retries() -> int:
    return int(options()["HITL_NOTIFY_MAX_RETRIES"])


@shared_task(
    name="hitl.notify_email",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded below by HITL_NOTIFY_MAX_RETRIES, read at run time
)
@scoped_to_tenant
def notify_email_task(
    self: Task,
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
@scoped_to_tenant
def notify_slack_task(self: Task, tenant_id: int, request_id: str, event: str) -> str:
    url = options()["HITL_SLACK_WEBHOOK_URL"]
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
