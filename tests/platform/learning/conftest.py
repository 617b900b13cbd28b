"""Webhook senders for tests: each signs exactly as its provider documents it, computed here
(or by Slack's own client library), never by the code under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client, TestCase
from slack_sdk.signature import SignatureVerifier

from learning import activity
from learning.models import ActivityEvent, WebhookDelivery
from learning.webhooks.services import create_endpoint
from tests.platform.api.conftest import ACTOR, Persona, make_persona
from tests.platform.api.conftest import agent as agent
from tests.platform.api.conftest import outsider as outsider
from tests.platform.api.conftest import owner as owner

PROVIDERS = ("slack", "zendesk", "jira", "generic")


def zendesk_timestamp(unix: float) -> str:
    return datetime.fromtimestamp(int(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(
    provider: str,
    secret: str,
    body: bytes,
    *,
    at: float | None = None,
    delivery_id: str = "delivery-1",
    retry: int | None = None,
) -> dict[str, str]:
    """The headers a provider sends for ``body`` signed with ``secret`` at time ``at``."""
    at = time.time() if at is None else at
    if provider == "slack":
        timestamp = str(int(at))
        signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
        assert signature is not None
        headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return headers
    if provider == "zendesk":
        timestamp = zendesk_timestamp(at)
        raw = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
        return {
            "X-Zendesk-Webhook-Signature": base64.b64encode(raw).decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Invocation-Id": delivery_id,
        }
    if provider == "jira":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-Hub-Signature": f"sha256={digest}",
            "X-Atlassian-Webhook-Identifier": delivery_id,
        }
        if retry is not None:
            headers["X-Atlassian-Webhook-Retry"] = str(retry)
        return headers
    timestamp = str(int(at))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {
        "X-AgentFlow-Timestamp": timestamp,
        "X-AgentFlow-Signature": f"v1={digest}",
        "X-AgentFlow-Delivery": delivery_id,
    }
    if retry is not None:
        headers["X-AgentFlow-Retry"] = str(retry)
    return headers


def ticket_payload(
    provider: str, *, ticket: str = "1001", text: str = "", user: str = "u-42"
) -> dict[str, Any]:
    """A new-ticket (or new-message) payload in the provider's own shape."""
    text = text or "I was charged twice for my subscription this month"
    if provider == "slack":
        return {
            "type": "event_callback",
            "team_id": "T1",
            "event_id": f"Ev{ticket}",
            "authorizations": [{"user_id": "UBOT"}],
            "event": {
                "type": "app_mention",
                "user": user,
                "text": f"<@UBOT> {text}",
                "channel": "C1",
                "ts": f"{ticket}.000100",
            },
        }
    if provider == "zendesk":
        return {
            "type": "zen:event-type:ticket.created",
            "detail": {
                "id": ticket,
                "subject": "Double charge",
                "description": text,
                "requester_id": user,
                "status": "NEW",
                "priority": "HIGH",
                "tags": ["billing"],
            },
        }
    if provider == "jira":
        return {
            "webhookEvent": "jira:issue_created",
            "issue": {
                "key": f"SUP-{ticket}",
                "fields": {
                    "summary": "Double charge",
                    "description": text,
                    "reporter": {"accountId": user, "displayName": "Dana"},
                    "status": {"name": "Open"},
                    "issuetype": {"name": "Billing"},
                    "labels": ["billing"],
                },
            },
        }
    return {
        "type": "ticket.created",
        "customer": {"id": user, "name": "Dana"},
        "ticket": {"id": ticket, "subject": "Double charge", "category": "billing"},
        "text": text,
    }


@dataclass
class Sender:
    """One tenant's endpoint of one provider, and a client that delivers to it."""

    persona: Persona
    provider: str
    endpoint_id: str
    secret: str
    client: Client = field(default_factory=lambda: Client(raise_request_exception=False))
    on_commit: list[Any] = field(default_factory=list)  # what the last delivery scheduled

    @property
    def path(self) -> str:
        return f"/api/v1/webhooks/{self.provider}/{self.endpoint_id}"

    def deliver(
        self,
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        at: float | None = None,
        delivery_id: str = "delivery-1",
        retry: int | None = None,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signed = sign(
            self.provider,
            secret or self.secret,
            body,
            at=at,
            delivery_id=delivery_id,
            retry=retry,
        )
        # Inside the test's transaction, run what the delivery scheduled for its commit
        # (publishing to the stream) and keep it, so tests can tell what was enqueued.
        with TestCase.captureOnCommitCallbacks(execute=True) as callbacks:
            response = self.client.post(
                path or self.path,
                body,
                content_type="application/json",
                headers={**signed, **(headers or {})},
            )
        self.on_commit = list(callbacks)
        return response


def make_sender(persona: Persona, provider: str, secret: str | None = None) -> Sender:
    issued = create_endpoint(actor=ACTOR, tenant=persona.tenant, provider=provider, secret=secret)
    plaintext = secret or issued.secret
    assert plaintext is not None
    return Sender(persona, provider, str(issued.endpoint.pk), plaintext)


@pytest.fixture
def other(db: None) -> Persona:
    return make_persona("Initech", tier="professional")


def stored(persona: Persona) -> tuple[int, int]:
    """(activity events, deliveries) of the persona's tenant."""
    tenant = persona.tenant
    return (
        ActivityEvent.unscoped.filter(tenant=tenant).count(),
        WebhookDelivery.unscoped.filter(tenant=tenant).count(),
    )


def stream_length(persona: Persona) -> int:
    return int(activity.client().xlen(activity.stream_key(persona.tenant.pk)))
