"""Webhook endpoints (create, rotate, delete: audited), accepting deliveries, posting replies.

Accepting a delivery does only what must happen before the answer: find the endpoint,
check the signature (and timestamp) against its valid secrets, parse, and store the
delivery and its activity event in one transaction, unique per endpoint and delivery id
and per tenant and signed content (delivery ids are unsigned: a replay may change them).
Publishing to the stream happens on commit; graph building and runs happen in Celery.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.db import IntegrityError, connection, transaction

from agentflow.core.api.serializers import unstorable_text
from agentflow.core.conf import setting_float, setting_int
from agentflow.core.context import current_correlation_id
from agentflow.models import Message, MessageRole, Run, RunStatus
from governance.audit import Actor, append
from learning.models import EventRule, WebhookEndpoint
from learning.rules import reply_url_allowed
from learning.services import publish_on_commit
from learning.webhooks import secrets
from learning.webhooks.providers import PROVIDERS, BadPayload, Rejected
from tenants.context import tenant_scope
from tenants.models import Tenant

log = structlog.get_logger(__name__)

MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 256
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
# Verified against when the endpoint id is unknown, so that case costs what a real check does.
_DECOY_SECRET = secrets.generate()


class InvalidSecret(ValueError):
    """A signing secret that is too short, too long or not printable (HTTP 422)."""


class TenantInactive(Exception):
    """The endpoint's tenant is suspended: deliveries are refused (HTTP 403)."""


def validate_secret(secret: str) -> None:
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise InvalidSecret(f"Must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} characters.")
    if not secret.isascii() or not secret.isprintable() or any(c.isspace() for c in secret):
        raise InvalidSecret("Must be printable ASCII without spaces.")


# --- endpoints ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedSecret:
    endpoint: WebhookEndpoint
    secret: str | None  # the plaintext when we generated it (shown once), else None


def create_endpoint(
    *, actor: Actor, tenant: Tenant, provider: str, name: str = "", secret: str | None = None
) -> IssuedSecret:
    if secret is not None:
        validate_secret(secret)
    plaintext = secret if secret is not None else secrets.generate()
    with tenant_scope(tenant.pk), transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            provider=provider, name=name, secret_encrypted=secrets.encrypt(plaintext)
        )
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="webhook_endpoint.created",
            target_type="webhook_endpoint",
            target_id=endpoint.pk,
            changes={"provider": provider, "name": name, "secret_generated": secret is None},
        )
    return IssuedSecret(endpoint, None if secret is not None else plaintext)


def rotate_endpoint(
    *,
    actor: Actor,
    endpoint: WebhookEndpoint,
    secret: str | None = None,
    overlap_seconds: int | None = None,
) -> IssuedSecret:
    """New secret now; the current one keeps verifying for ``overlap_seconds`` (0: never)."""
    if secret is not None:
        validate_secret(secret)
    overlap = (
        setting_int("WEBHOOK_ROTATION_OVERLAP_SECONDS")
        if overlap_seconds is None
        else overlap_seconds
    )
    plaintext = secret if secret is not None else secrets.generate()
    now = datetime.now(UTC)
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret_encrypted = locked.secret_encrypted if overlap > 0 else ""
        locked.previous_secret_expires_at = (
            now + timedelta(seconds=overlap) if overlap > 0 else None
        )
        locked.secret_encrypted = secrets.encrypt(plaintext)
        locked.rotated_at = now
        locked.save()
        append(
            tenant_id=locked.tenant_id,
            actor=actor,
            action="webhook_endpoint.rotated",
            target_type="webhook_endpoint",
            target_id=locked.pk,
            changes={"overlap_seconds": overlap, "secret_generated": secret is None},
        )
    return IssuedSecret(locked, None if secret is not None else plaintext)


def delete_endpoint(*, actor: Actor, endpoint: WebhookEndpoint) -> None:
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        append(
            tenant_id=endpoint.tenant_id,
            actor=actor,
            action="webhook_endpoint.deleted",
            target_type="webhook_endpoint",
            target_id=endpoint.pk,
            changes={"provider": endpoint.provider, "name": endpoint.name},
        )
        endpoint.delete()


def valid_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    found = [secrets.decrypt(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        found.append(secrets.decrypt(endpoint.previous_secret_encrypted))
    return found


# --- deliveries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    event_id: str | None = None
    duplicate: bool = False
    challenge: str | None = None  # Slack's url_verification: echo it, store nothing


def _endpoint(provider: str, endpoint_id: Any) -> WebhookEndpoint | None:
    # Before any tenant scope: the endpoint's row says whose delivery this is.
    return (
        WebhookEndpoint.unscoped.select_related("tenant")
        .filter(pk=endpoint_id, provider=provider)
        .first()
    )


def receive(provider_name: str, endpoint_id: Any, headers: Any, body: bytes) -> Accepted:
    """Verify and store one delivery. Raises Rejected (401), TenantInactive (403) or
    BadPayload (422); nothing is stored or enqueued in those cases."""
    provider = PROVIDERS[provider_name]
    now = time.time()
    endpoint = _endpoint(provider_name, endpoint_id)
    candidates = (
        valid_secrets(endpoint, datetime.fromtimestamp(now, UTC)) if endpoint else [_DECOY_SECRET]
    )
    window = setting_int("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS")
    provider.verify(candidates, headers, body, now, window)
    if endpoint is None:  # unreachable unless the decoy was guessed; kept for clarity
        raise Rejected("unknown endpoint")
    if not endpoint.tenant.is_active:
        raise TenantInactive(endpoint.tenant.status)
    payload = provider.parse(headers, body)
    provider.check_signed_age(payload, now, window, setting_int("WEBHOOK_REPLAY_RETENTION_SECONDS"))
    if (where := unstorable_text(payload, "body")) is not None:
        raise BadPayload(f"{where}: contains a NUL character or invalid Unicode")
    if provider_name == "slack" and payload.get("type") == "url_verification":
        return Accepted(challenge=str(payload.get("challenge") or ""))
    delivery = Delivery(
        delivery_id=provider.delivery_id(headers, payload, body),
        signed=provider.replay_digest(headers, body),
        kind=provider.kind(payload),
        payload=payload,
    )
    return _store(endpoint, provider_name, delivery)


@dataclass(frozen=True)
class Delivery:
    delivery_id: str  # the provider's (unsigned) id: equal on its retries
    signed: str  # digest of the signed content: equal on a replay, whatever its id
    kind: str
    payload: dict[str, Any]


# One statement, one round trip: the signed-content row claims (tenant, digest), then the
# delivery row claims (endpoint, delivery id), and only when both are new is the event
# inserted (the foreign keys to the event are checked at commit, as Django makes
# PostgreSQL foreign keys deferrable). A concurrent copy of the same delivery or of the
# same signed content waits on a unique index and then inserts nothing. The digest is
# claimed first, always: one lock order, so two arrivals cannot deadlock.
_INSERT_NEW = """
WITH signed AS (
    INSERT INTO learning_webhooksignedcontent (tenant_id, digest, event_id)
    VALUES (%(tenant)s, %(signed)s, %(event)s)
    ON CONFLICT (tenant_id, digest) DO NOTHING
    RETURNING event_id
), delivery AS (
    INSERT INTO learning_webhookdelivery (tenant_id, endpoint_id, delivery_id, event_id, attempts)
    SELECT %(tenant)s, %(endpoint)s, %(delivery)s, event_id, 1 FROM signed
    ON CONFLICT (endpoint_id, delivery_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO learning_activityevent
    (tenant_id, id, source, kind, payload, dedup_key, correlation_id, stream_id, attempts,
     last_error, outcome)
SELECT %(tenant)s, event_id, %(source)s, %(kind)s, %(payload)s::jsonb, '', %(correlation)s, '',
       0, '', '{}'::jsonb
FROM delivery
RETURNING id
"""
_SIGNED_EVENT = """
SELECT event_id FROM learning_webhooksignedcontent
WHERE tenant_id = %(tenant)s AND digest = %(signed)s
"""
_COUNT_RETRY = """
UPDATE learning_webhookdelivery SET attempts = attempts + 1, last_attempt_at = now()
WHERE endpoint_id = %(endpoint)s AND delivery_id = %(delivery)s
RETURNING event_id
"""
# A replay under a new delivery id counts as one more arrival of the delivery it copies.
_COUNT_REPLAY = """
UPDATE learning_webhookdelivery SET attempts = attempts + 1, last_attempt_at = now()
WHERE tenant_id = %(tenant)s AND event_id = %(known)s
"""
# A retry re-signed with a fresh timestamp has content of its own: it points at its delivery's
# event, so a replay of the retry under yet another id is recognised too.
_POINT_SIGNED = """
UPDATE learning_webhooksignedcontent SET event_id = %(known)s
WHERE tenant_id = %(tenant)s AND digest = %(signed)s
"""
# Forgetting is amortised over new deliveries (a bounded batch each, skipping rows another
# delivery is forgetting): no sweep to schedule, and the table holds about one retention.
_FORGET_OLD = """
DELETE FROM learning_webhooksignedcontent WHERE id IN (
    SELECT id FROM learning_webhooksignedcontent
    WHERE tenant_id = %(tenant)s AND seen_at < now() - make_interval(secs => %(keep)s)
    ORDER BY seen_at LIMIT 100 FOR UPDATE SKIP LOCKED
)
"""


def replay_keep_seconds() -> int:
    """How long a signed-content digest is kept: the retention, plus twice the timestamp
    tolerance, so no signed timestamp still inside the window outlives its digest."""
    retention = setting_int("WEBHOOK_REPLAY_RETENTION_SECONDS")
    return retention + 2 * setting_int("WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS")


def _store(endpoint: WebhookEndpoint, source: str, delivery: Delivery) -> Accepted:
    """Store a new delivery and its event, or count a retry (same delivery id) or a replay
    (same signed content under another id) of a known one."""
    params: dict[str, Any] = {
        # From the endpoint's row, never from the request: this is the tenant boundary.
        "tenant": endpoint.tenant_id,
        "endpoint": endpoint.pk,
        "delivery": delivery.delivery_id,
        "signed": delivery.signed,
        "event": uuid.uuid4(),
        "source": source,
        "kind": delivery.kind,
        "payload": json.dumps(delivery.payload),
        "correlation": current_correlation_id() or "",
        "keep": replay_keep_seconds(),
    }
    # One transaction: a retry's digest is re-pointed before anything is visible.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT_NEW, params)
        created = cursor.fetchone()
        if created is None:
            return Accepted(event_id=_count_duplicate(cursor, params), duplicate=True)
        cursor.execute(_FORGET_OLD, params)
        publish_on_commit(endpoint.tenant_id, created[0])
    return Accepted(event_id=str(created[0]))


def _count_duplicate(cursor: Any, params: dict[str, Any]) -> str:
    """The event a duplicate copies, its arrival counted on that event's delivery row."""
    cursor.execute(_SIGNED_EVENT, params)
    signed = cursor.fetchone()
    if signed is None:  # the first copy was deleted meanwhile: let the sender retry
        raise IntegrityError("signed content vanished while counting a duplicate")
    if signed[0] != params["event"]:  # known signed content: a replay (or a same-second retry)
        cursor.execute(_COUNT_REPLAY, {**params, "known": signed[0]})
        return str(signed[0])
    # We claimed new signed content, but the delivery id is known: a re-signed retry.
    cursor.execute(_COUNT_RETRY, params)
    found = cursor.fetchone()
    if found is None:  # the first copy was deleted meanwhile: let the sender retry
        raise IntegrityError("delivery vanished while counting a retry")
    cursor.execute(_POINT_SIGNED, {**params, "known": found[0]})
    return str(found[0])


# --- replies -----------------------------------------------------------------------------------


class ReplyFailed(Exception):
    """The reply URL answered an error or could not be reached (retried by the task)."""


def send_reply(run_id: str, message_id: str | None = None) -> str:
    """POST a completed rule run's answer to the rule's reply URL (inside the tenant scope).

    With ``message_id``: that message of the run's session instead, a person's reply in a
    conversation taken over from the agent (``agentflow.takeover``), whatever the run's status.
    """
    run = Run.objects.filter(pk=run_id).values("status", "result", "metadata", "session").first()
    if run is None or (message_id is None and run["status"] != RunStatus.COMPLETED):
        return "not_completed"
    metadata = run["metadata"] or {}
    rule_id = metadata.get("rule_id")
    rule = EventRule.objects.filter(pk=str(rule_id)).first() if rule_id else None
    if rule is None or not rule.reply_url:
        return "no_reply_url"
    if not reply_url_allowed(rule.reply_url):
        log.warning("webhooks.reply_url_refused", rule_id=str(rule.pk))
        return "url_not_allowed"
    text = _reply_text(run, message_id)
    if not text:
        return "no_answer"
    body = {
        "text": text,
        **{k: v for k, v in (metadata.get("reply") or {}).items() if k in ("channel", "thread_ts")},
        "run_id": str(run_id),
        "event_id": metadata.get("activity_event_id"),
        **({"message_id": message_id, "from": "human"} if message_id else {}),
    }
    post = urllib.request.Request(  # noqa: S310 - allowlisted http(s) URL
        rule.reply_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    timeout = setting_float("WEBHOOK_REPLY_TIMEOUT_SECONDS")
    try:
        with urllib.request.urlopen(post, timeout=timeout) as answer:  # noqa: S310
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error holds the open response (see hitl.notifications.post_to_slack)
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ReplyFailed(str(exc)) from exc
    if status >= 500 or status == 429:
        raise ReplyFailed(f"reply URL answered {status}")
    if status >= 400:
        log.warning("webhooks.reply_refused", run_id=str(run_id), status=status)
        return f"refused:{status}"
    return "sent"


def _reply_text(run: Mapping[str, Any], message_id: str | None) -> str:
    if message_id is None:
        return str((run["result"] or {}).get("content") or "")
    content = (
        Message.objects.filter(pk=message_id, session_id=run["session"], role=MessageRole.ASSISTANT)
        .values_list("content", flat=True)
        .first()
    )
    return str(content or "")
