"""``Idempotency-Key`` on POSTs that create work (SPEC 5).

Scope: tenant + key + method + path, kept ``IDEMPOTENCY_TTL_SECONDS`` (24 h).
Same key and body → the first response, replayed; same key, other body → 422;
a duplicate arriving while the first is still running waits for it briefly,
then gets 409. The reservation row commits before the work starts, so the
unique constraint decides races between processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.server.api.exceptions import conflict, unprocessable
from tenants.context import current_tenant_id
from tenants.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEPT_HEADERS = ("Location", "Retry-After", "Deprecation", "X-Deprecation-Notice")
WAIT_FOR_FIRST_SECONDS = 5.0


@dataclass
class Reservation:
    record: IdempotencyRecord | None = None  # ours to complete
    replay: Response | None = None


def body_fingerprint(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    headers = {**record.response_headers, REPLAYED_HEADER: "true"}
    return Response(record.response_body, status=record.response_status, headers=headers)


def _owner() -> str:
    tenant_id = current_tenant_id()
    return f"tenant:{tenant_id}" if tenant_id is not None else "platform"


def reserve(key: str, method: str, path: str, fingerprint: str) -> Reservation:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=settings.AGENTFLOW["IDEMPOTENCY_TTL_SECONDS"])
    owner = _owner()
    records = IdempotencyRecord.objects.filter(owner=owner, key=key, method=method, path=path)
    records.filter(expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                owner=owner,
                key=key,
                method=method,
                path=path,
                body_hash=fingerprint,
                expires_at=now + ttl,
            )
        return Reservation(record=record)
    except IntegrityError:
        pass
    deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
    while True:
        existing = records.first()
        if existing is None:  # the first attempt failed and released the key: take it
            return reserve(key, method, path, fingerprint)
        if existing.body_hash != fingerprint:
            raise unprocessable(
                "Idempotency-Key was already used with a different request body.",
                {HEADER: ["Reused with a different body."]},
            )
        if existing.completed:
            return Reservation(replay=_replay(existing))
        if time.monotonic() >= deadline:
            raise conflict(
                "A request with this Idempotency-Key is still being processed; retry later.",
                "idempotency_in_progress",
            )
        time.sleep(0.05)


def complete(record: IdempotencyRecord, response: Response) -> None:
    headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        completed=True,
        response_status=response.status_code,
        response_body=response.data,
        response_headers=headers,
    )


def release(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, completed=False).delete()


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate a view's ``post``: replays and conflicts per the contract above."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise unprocessable(
                "Invalid Idempotency-Key.", {HEADER: ["1-255 printable characters."]}
            )
        reservation = reserve(
            key, request.method or "POST", request.path, body_fingerprint(request.data)
        )
        if reservation.replay is not None:
            return reservation.replay
        assert reservation.record is not None
        try:
            response = handler(view, request, *args, **kwargs)
        except Exception:
            release(reservation.record)  # a failed attempt must not pin the key
            raise
        if response.status_code >= 500:
            release(reservation.record)
        else:
            complete(reservation.record, response)
        return response

    return wrapper
