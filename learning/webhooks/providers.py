"""Signature schemes of the providers (SPEC 10), one class each, and their delivery ids.

Every check compares in constant time (``hmac.compare_digest``) and accepts any of the
endpoint's valid secrets (the current one and, during a rotation's overlap, the previous
one). A failed check raises :class:`Rejected` with a reason for the logs; the caller
answers every rejection with the same ``401``.

* Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{X-Slack-Request-Timestamp}:{body}">``.
* Zendesk: ``X-Zendesk-Webhook-Signature: <base64 HMAC-SHA256 of
  "{X-Zendesk-Webhook-Signature-Timestamp}{body}">``; the timestamp is ISO 8601.
* Jira: ``X-Hub-Signature: sha256=<hex HMAC-SHA256 of body>``; no signed timestamp: the
  digest of the signed content (below) and the body's own ``timestamp`` bound a replay.
* generic: ``X-AgentFlow-Signature: v1=<hex HMAC-SHA256 of "{X-AgentFlow-Timestamp}.{body}">``
  with a unix-seconds timestamp.

Timestamps more than ``WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS`` (300 s) away from our clock,
in either direction, are rejected.

Delivery ids travel in unsigned headers, so a captured delivery could be replayed under a
new one: :meth:`Provider.replay_digest` names what the signature covered, and the store
treats a second arrival of the same digest as a duplicate whatever its delivery id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

from learning.models import WebhookProvider

_KIND_UNSAFE = re.compile(r"[^a-z0-9_.-]+")


class Rejected(Exception):
    """The delivery is not authentic (or not fresh); the reason is for logs only."""


class BadPayload(ValueError):
    """Authentic, but not a payload we can store (not a JSON object, ...)."""


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _matches(expected: Iterable[bytes], given: str) -> bool:
    given_bytes = _bytes(given.strip())
    # Every candidate is compared (no early exit): the timing does not say which one matched.
    results = [hmac.compare_digest(candidate, given_bytes) for candidate in expected]
    return any(results)


def _hmac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def body_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def kind_label(*parts: str) -> str:
    text = ".".join(part for part in parts if part)
    return _KIND_UNSAFE.sub("_", text.lower()).strip("._")[:100] or "event"


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise Rejected(f"missing {name}")
    return value


class Provider(ABC):
    """One provider's signature scheme and payload shape; every provider implements both."""

    name: ClassVar[str]
    delivery_header: ClassVar[str | None] = None
    retry_header: ClassVar[str | None] = None

    @abstractmethod
    def verify(
        self, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float, window: int
    ) -> None:
        """Raise ``Rejected`` unless one of ``secrets`` signed this delivery in the window."""

    @abstractmethod
    def signed_content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """Exactly the bytes the provider's HMAC covers (``verify`` checks these)."""

    def replay_digest(self, headers: Mapping[str, str], body: bytes) -> str:
        """SHA-256 of the provider and its signed content: equal for a replay, whatever
        unsigned header (delivery id, retry number) was changed."""
        return hashlib.sha256(
            self.name.encode() + b"\n" + self.signed_content(headers, body)
        ).hexdigest()

    def check_signed_age(self, payload: dict[str, Any], now: float, window: int, keep: int) -> None:
        """Providers without a signed timestamp header check one inside the signed body;
        the others' timestamp was checked by ``verify``."""
        return None

    @staticmethod
    def check_window(timestamp: float, now: float, window: int) -> None:
        if abs(now - timestamp) > window:
            raise Rejected(f"timestamp {timestamp:.0f} is more than {window} s from {now:.0f}")

    def parse(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            raise BadPayload(f"body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise BadPayload("body must be a JSON object")
        return payload

    def delivery_id(self, headers: Mapping[str, str], payload: dict[str, Any], body: bytes) -> str:
        """The provider's id of this delivery (same on every retry); the body's digest when
        the provider sent none, so a byte-identical replay is still recognised."""
        value = headers.get(self.delivery_header) if self.delivery_header else None
        return value.strip()[:200] if value and value.strip() else body_digest(body)

    def attempt(self, headers: Mapping[str, str]) -> int | None:
        raw = headers.get(self.retry_header) if self.retry_header else None
        return int(raw) if raw and raw.strip().isdigit() else None

    @abstractmethod
    def kind(self, payload: dict[str, Any]) -> str:
        """The activity event kind of this payload, e.g. ``zendesk.ticket.created``."""


class Slack(Provider):
    name = WebhookProvider.SLACK
    retry_header = "X-Slack-Retry-Num"

    def verify(
        self, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float, window: int
    ) -> None:
        raw_ts = _header(headers, "X-Slack-Request-Timestamp").strip()
        if not raw_ts.isdigit():
            raise Rejected("X-Slack-Request-Timestamp is not unix seconds")
        self.check_window(int(raw_ts), now, window)
        base = self.signed_content(headers, body)
        expected = [b"v0=" + _hmac(secret, base).hex().encode() for secret in secrets]
        if not _matches(expected, _header(headers, "X-Slack-Signature")):
            raise Rejected("X-Slack-Signature does not match")

    def signed_content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        raw_ts = _header(headers, "X-Slack-Request-Timestamp").strip()
        return b"v0:" + _bytes(raw_ts) + b":" + body

    def parse(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        content_type = headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" not in content_type:
            return super().parse(headers, body)
        # Slash commands and interactivity arrive as forms (interactivity: JSON in "payload").
        try:
            form = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError as exc:
            raise BadPayload("form body is not UTF-8") from exc
        if "payload" in form:
            return super().parse(headers, form["payload"].encode())
        return form

    def delivery_id(self, headers: Mapping[str, str], payload: dict[str, Any], body: bytes) -> str:
        event_id = payload.get("event_id")
        if isinstance(event_id, str) and event_id.strip():
            return event_id.strip()[:200]
        return body_digest(body)

    def kind(self, payload: dict[str, Any]) -> str:
        event = payload.get("event")
        if payload.get("type") == "event_callback" and isinstance(event, dict):
            return kind_label("slack", str(event.get("type") or "event"))
        if "command" in payload:
            return "slack.command"
        return kind_label("slack", str(payload.get("type") or "event"))


class Zendesk(Provider):
    name = WebhookProvider.ZENDESK
    delivery_header = "X-Zendesk-Webhook-Invocation-Id"

    def verify(
        self, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float, window: int
    ) -> None:
        raw_ts = _header(headers, "X-Zendesk-Webhook-Signature-Timestamp").strip()
        self.check_window(_parse_timestamp(raw_ts), now, window)
        message = self.signed_content(headers, body)
        expected = [base64.b64encode(_hmac(secret, message)) for secret in secrets]
        if not _matches(expected, _header(headers, "X-Zendesk-Webhook-Signature")):
            raise Rejected("X-Zendesk-Webhook-Signature does not match")

    def signed_content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        return _bytes(_header(headers, "X-Zendesk-Webhook-Signature-Timestamp").strip()) + body

    def kind(self, payload: dict[str, Any]) -> str:
        event_type = payload.get("type")
        if isinstance(event_type, str) and event_type.startswith("zen:event-type:"):
            return kind_label("zendesk", event_type.removeprefix("zen:event-type:"))
        named = payload.get("event") if isinstance(payload.get("event"), str) else event_type
        return kind_label("zendesk", str(named or "webhook"))


class Jira(Provider):
    name = WebhookProvider.JIRA
    delivery_header = "X-Atlassian-Webhook-Identifier"
    retry_header = "X-Atlassian-Webhook-Retry"

    def verify(
        self, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float, window: int
    ) -> None:
        message = self.signed_content(headers, body)
        expected = [b"sha256=" + _hmac(secret, message).hex().encode() for secret in secrets]
        if not _matches(expected, _header(headers, "X-Hub-Signature")):
            raise Rejected("X-Hub-Signature does not match")

    def signed_content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        return body

    def check_signed_age(self, payload: dict[str, Any], now: float, window: int, keep: int) -> None:
        """Jira signs no timestamp, but its event bodies carry ``timestamp`` (epoch ms).
        Older than the digests are kept, a replay could no longer be recognised: refused.
        (Jira retries for 30 minutes with the same body, so the window cannot be used.)"""
        stamp = payload.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, int | float):
            return  # e.g. an automation rule's custom body: the digest alone bounds a replay
        try:
            seconds = float(stamp) / 1000
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or now - seconds > keep or seconds - now > window:
            raise Rejected(f"body timestamp {seconds:.0f} is outside [now-{keep}, now+{window}]")

    def kind(self, payload: dict[str, Any]) -> str:
        event = str(payload.get("webhookEvent") or "webhook")
        return kind_label("jira", event.removeprefix("jira:"))


class Generic(Provider):
    name = WebhookProvider.GENERIC
    delivery_header = "X-AgentFlow-Delivery"
    retry_header = "X-AgentFlow-Retry"

    def verify(
        self, secrets: list[str], headers: Mapping[str, str], body: bytes, now: float, window: int
    ) -> None:
        raw_ts = _header(headers, "X-AgentFlow-Timestamp").strip()
        if not raw_ts.isdigit():
            raise Rejected("X-AgentFlow-Timestamp is not unix seconds")
        self.check_window(int(raw_ts), now, window)
        message = self.signed_content(headers, body)
        expected = [b"v1=" + _hmac(secret, message).hex().encode() for secret in secrets]
        # A sender mid-rotation may sign with both secrets: "v1=<old>,v1=<new>".
        given = _header(headers, "X-AgentFlow-Signature").split(",")
        if not any(_matches(expected, part) for part in given):
            raise Rejected("X-AgentFlow-Signature does not match")

    def signed_content(self, headers: Mapping[str, str], body: bytes) -> bytes:
        return _bytes(_header(headers, "X-AgentFlow-Timestamp").strip()) + b"." + body

    def kind(self, payload: dict[str, Any]) -> str:
        return kind_label("generic", str(payload.get("type") or "event"))


def _parse_timestamp(raw: str) -> float:
    if raw.isdigit():
        return float(raw)
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Rejected("timestamp is neither ISO 8601 nor unix seconds") from exc
    if parsed.tzinfo is None:
        raise Rejected("timestamp has no time zone")
    return parsed.timestamp()


PROVIDERS: dict[str, Provider] = {
    provider.name: provider for provider in (Slack(), Zendesk(), Jira(), Generic())
}
