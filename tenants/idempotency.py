"""``Idempotency-Key`` on POSTs that create work (SPEC 5).

Scope: tenant + key + method + path, kept ``IDEMPOTENCY_TTL_SECONDS`` (24 h).
Same key and body → the first response, replayed byte for byte (its rendered body and
headers are stored as sent: JSONB would reorder the keys); same key, other body → 422;
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

from django.db import IntegrityError, transaction
from django.http import HttpResponse, HttpResponseBase
from django.template.response import SimpleTemplateResponse
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import conflict, unprocessable
from agentflow.core.conf import setting_int
from tenants import erasers
from tenants.context import current_tenant_id
from tenants.erasers import ErasureSubject
from tenants.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEPT_HEADERS = (
    "Content-Type",
    "Location",
    "Retry-After",
    "Deprecation",
    "X-Deprecation-Notice",
)
WAIT_FOR_FIRST_SECONDS = 5.0


@dataclass
class Reservation:
    record: IdempotencyRecord | None = None  # ours to complete
    replay: HttpResponseBase | None = None


def body_fingerprint(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(record: IdempotencyRecord) -> HttpResponseBase:
    headers = {**record.response_headers, REPLAYED_HEADER: "true"}
    if record.response_content is None:
        # Stored before the exact bytes were kept (migration 0003): re-render the JSON.
        return Response(record.response_body, status=record.response_status, headers=headers)
    # The first response's own bytes: no renderer runs again.
    return HttpResponse(
        bytes(record.response_content), status=record.response_status, headers=headers
    )


def _owner() -> str:
    tenant_id = current_tenant_id()
    return f"tenant:{tenant_id}" if tenant_id is not None else "platform"


def reserve(key: str, method: str, path: str, fingerprint: str) -> Reservation:
    now = datetime.now(UTC)
    ttl = timedelta(seconds=setting_int("IDEMPOTENCY_TTL_SECONDS"))
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


def complete(record: IdempotencyRecord, response: HttpResponseBase) -> None:
    """Store the rendered response: its bytes and headers as they go out.

    ``response_body`` (the data as JSON) is kept too: erasure finds an end user's stored
    responses by it (``governance.erasure``).
    """
    headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        completed=True,
        response_status=response.status_code,
        response_body=getattr(response, "data", None),
        response_content=getattr(response, "content", b""),
        response_headers=headers,
    )


def _complete_when_rendered(record: IdempotencyRecord, response: HttpResponseBase) -> None:
    """A DRF response has no bytes until Django renders it, after the view returns (the
    renderer is chosen in ``finalize_response``): store them then, before it is sent."""
    if not isinstance(response, SimpleTemplateResponse) or response.is_rendered:
        complete(record, response)
        return

    def store(rendered: HttpResponseBase) -> None:
        try:
            complete(record, rendered)
        except Exception:
            release(record)  # nothing stored: a retry must be able to run again
            raise

    response.add_post_render_callback(store)


def release(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, completed=False).delete()


def idempotent(handler: Callable[..., Response]) -> Callable[..., HttpResponseBase]:
    """Decorate a view's ``post``: replays and conflicts per the contract above."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
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
            _complete_when_rendered(reservation.record, response)
        return response

    return wrapper


def erase_end_user(subject: ErasureSubject) -> dict[str, int]:
    """GDPR eraser: first responses kept for Idempotency-Key replays carry the run's user id
    and answer (registered from ``TenantsConfig.ready``)."""
    records = IdempotencyRecord.objects.filter(
        owner=f"tenant:{subject.tenant_id}", response_body__user_id=subject.user_id
    )
    return {"idempotency_records": records.delete()[0]}


def register_eraser() -> None:
    erasers.register_eraser("tenants.idempotency", erasers.Stage.OWNER, erase_end_user)
