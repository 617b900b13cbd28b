"""E-mail and Slack notifications of SLA events, sent by Celery tasks after commit.

A notification is enqueued by the transaction that won the event (a breach, an
escalation, an expiry, a queued request whose policy asks for it), so each is sent
once, whatever the number of sweeps. Sending never blocks the sweep: the tasks retry
with backoff and log a final failure.

E-mails go to the members whose role must act now, the previous assignee and the
policy's extra addresses, through Django's mail backend. Slack gets a short line with
no customer text (the webhook is the platform operator's channel, shared by tenants).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from hitl.models import EscalationPolicy, HITLRequest
from hitl.policy import policy_of
from tenants.models import Membership, Tenant

SLACK_TIMEOUT_SECONDS = 5.0
_SUBJECTS = {
    "queued": "New {priority} review request",
    "breached": "SLA breached: {priority} review request",
    "escalated": "Escalated to {role}: {priority} review request",
    "expired": "Expired without a decision: {priority} review request",
}


class SlackRejected(Exception):
    """Slack answered with a client error: retrying the same post cannot help."""


class SlackUnavailable(Exception):
    """Slack could not be reached or answered 429/5xx: worth retrying."""


@dataclass(frozen=True)
class Email:
    subject: str
    body: str
    recipients: list[str]


def recipients(policy: EscalationPolicy, *, role: str, previous_assignee: int | None) -> list[str]:
    users = get_user_model().objects.filter(
        pk__in=Membership.objects.filter(role=role).values("user_id")
    )
    addresses = [address for address in users.values_list("email", flat=True) if address]
    if previous_assignee is not None:
        previous = get_user_model().objects.filter(pk=previous_assignee).first()
        if previous is not None and previous.email:
            addresses.append(previous.email)
    addresses += [str(address) for address in policy.extra_emails]
    return sorted(set(addresses))


def compose_email(
    request: HITLRequest, event: str, *, role: str, previous_assignee: int | None
) -> Email:
    tenant = Tenant.objects.get(pk=request.tenant_id)
    subject = _SUBJECTS[event].format(priority=request.priority, role=role)
    lines = [
        f"Tenant: {tenant.name} ({tenant.slug})",
        f"Request: {request.pk} ({request.kind}, {request.priority})",
        f"Status: {request.status}; needs: {request.required_role}",
        f"SLA deadline: {request.sla_deadline.isoformat()}",
        f"Reason: {request.escalation_reason or '-'}",
        "",
        "Question:",
        request.question[:1000],
    ]
    if request.proposed_answer:
        lines += ["", "Proposed answer:", request.proposed_answer[:1000]]
    lines += ["", f"History: /api/v1/hitl/queue/{request.pk}/history"]
    return Email(
        subject=f"[AgentFlow] {subject}",
        body="\n".join(lines),
        recipients=recipients(
            policy_of(request.policy), role=role, previous_assignee=previous_assignee
        ),
    )


def send_email(email: Email) -> int:
    if not email.recipients:
        return 0
    return send_mail(
        email.subject,
        email.body,
        settings.DEFAULT_FROM_EMAIL,
        email.recipients,
        fail_silently=False,
    )


def slack_text(request: HITLRequest, event: str) -> str:
    tenant = Tenant.objects.get(pk=request.tenant_id)
    deadline = request.sla_deadline.isoformat().replace("+00:00", "Z")
    return (
        f"[{tenant.slug}] review request {request.pk} ({request.priority}, {request.kind}): "
        f"{event}; needs {request.required_role}; SLA deadline {deadline}"
    )


def post_to_slack(url: str, text: str) -> int:
    """POST ``{"text": ...}`` to an incoming webhook; the status, or an exception."""
    if urlsplit(url).scheme not in {"http", "https"}:
        raise SlackRejected("the Slack webhook URL must be http(s)")
    body: dict[str, Any] = {"text": text}
    post = urllib.request.Request(  # noqa: S310 - scheme checked above; operator's setting
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(post, timeout=SLACK_TIMEOUT_SECONDS) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        # The error holds the open response: close it now. Left to a garbage cycle (a retried
        # task keeps the error), the socket could be finalised before it and warn "unclosed".
        exc.close()
        if exc.code == 429 or exc.code >= 500:
            raise SlackUnavailable(f"Slack answered {exc.code}") from exc
        raise SlackRejected(f"Slack answered {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SlackUnavailable(str(exc)) from exc
