"""What the sync and async clients share: the requests each call makes, when a failed
attempt is sent again, and how an answer becomes a value or an exception. The two clients
differ only in how they wait (``time.sleep`` or ``asyncio.sleep``) and send."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from agentflow.client.errors import error_from_response, retry_after_seconds

API_PREFIX = "/api/v1/"
# Runs in these states have not settled: send_message polls past them.
SETTLING = frozenset({"pending", "processing"})
# Refused before any work was done: resending is safe whatever the method.
_REFUSED_UNDONE = frozenset({429, 503})
# A proxy's answer: the request may or may not have reached the app.
_MAYBE_DONE = frozenset({502, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts after the first, and the doubling delay between them when the server names
    none (``Retry-After`` wins, up to ``max_delay_seconds``; a longer wait is raised)."""

    max_retries: int = 3
    backoff_seconds: float = 0.5
    max_delay_seconds: float = 30.0


@dataclass(frozen=True)
class Call:
    """One API operation. ``creates``: it makes something, so it carries an
    ``Idempotency-Key`` (the same on every attempt) and may be resent; ``safe``: sending it
    twice is harmless by itself (reads)."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    creates: bool = False
    safe: bool = False

    @property
    def resendable(self) -> bool:
        return self.safe or "Idempotency-Key" in self.headers

    def prepared(self) -> Call:
        """The call with its correlation id and, when it creates, its idempotency key:
        fixed once here, so every retry of it is the same request to the server."""
        headers = {"X-Correlation-ID": uuid.uuid4().hex, **self.headers}
        if self.creates:
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
        return replace(self, headers=headers)

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get("X-Correlation-ID")

    def request_kwargs(self) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"headers": dict(self.headers), "params": params}
        if self.body is not None:
            kwargs["json"] = self.body
        return kwargs


def base_url(url: str) -> str:
    return url.rstrip("/") + API_PREFIX


def client_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}


def retry_delay(
    policy: RetryPolicy,
    call: Call,
    attempt: int,
    response: httpx.Response | None,
) -> float | None:
    """Seconds to wait before sending ``call`` again, or None to stop (attempt counts from
    0; ``response`` None: the transport failed)."""
    if attempt >= policy.max_retries:
        return None
    backoff = min(policy.backoff_seconds * 2**attempt, policy.max_delay_seconds)
    if response is None:
        return backoff if call.resendable else None
    status = response.status_code
    in_progress = status == 409 and _error_type(response) == "idempotency_in_progress"
    if not (
        status in _REFUSED_UNDONE or in_progress or (status in _MAYBE_DONE and call.resendable)
    ):
        return None
    asked = retry_after_seconds(response)
    if asked is None:
        return backoff
    return asked if asked <= policy.max_delay_seconds else None


def _error_type(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error_type") if isinstance(body, dict) else None


def result(response: httpx.Response) -> Any:
    """The answer's JSON, None for an empty one; an error answer raises its typed error."""
    if response.status_code >= 400:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def poll_delay(response: httpx.Response, default: float) -> float:
    """How long to wait before asking about an unsettled run again: the server's
    ``Retry-After`` when it gives one."""
    asked = retry_after_seconds(response)
    return default if asked is None else asked


def location(response: httpx.Response) -> str:
    """The answer's ``Location``, absolute (the poll must not be re-prefixed)."""
    return str(response.url.join(response.headers["Location"]))
