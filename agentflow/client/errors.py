"""What the client raises: every API error as a typed exception carrying the server's
``error_type`` and ``correlation_id`` (docs/api.md, "Errors"), so a caller can branch on the
kind and quote the id to an operator, who finds the request's log lines by it."""

from __future__ import annotations

from typing import Any

import httpx


class AgentFlowError(Exception):
    """Anything the client raises."""

    def __init__(self, message: str, *, correlation_id: str | None = None) -> None:
        super().__init__(message)
        self.correlation_id = correlation_id


class TransportError(AgentFlowError):
    """The server could not be reached (or answered nothing) after the retries."""


class RunTimeoutError(AgentFlowError):
    """The run had not settled when the caller's timeout ran out; ``run`` is its last state."""

    def __init__(self, message: str, *, run: dict[str, Any], correlation_id: str | None) -> None:
        super().__init__(message, correlation_id=correlation_id)
        self.run = run


class APIError(AgentFlowError):
    """A non-2xx answer in the API's error shape."""

    def __init__(
        self,
        status_code: int,
        body: dict[str, Any],
        *,
        correlation_id: str | None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.detail = str(body.get("detail") or f"HTTP {status_code}")
        self.error_type = str(body.get("error_type") or f"http_{status_code}")
        errors = body.get("errors")
        self.errors: dict[str, Any] = errors if isinstance(errors, dict) else {}
        self.retry_after = retry_after
        super().__init__(
            f"{status_code} {self.error_type}: {self.detail} (correlation id {correlation_id})",
            correlation_id=correlation_id,
        )


class BadRequestError(APIError):
    """400: malformed JSON, a NUL in the path, ..."""


class AuthenticationError(APIError):
    """401: no key, or a revoked, expired or unknown one."""


class QuotaExceededError(APIError):
    """402: the tenant's monthly dollar budget is spent."""


class PermissionDeniedError(APIError):
    """403: the key lacks the scope (``detail`` names it), or the tenant is suspended."""


class NotFoundError(APIError):
    """404: no such object in this tenant (another tenant's is the same 404)."""


class ConflictError(APIError):
    """409: e.g. ``already_decided``, ``claimed_by_another``, ``run_not_completed``."""


class GoneError(APIError):
    """410: expired or revoked (invitations)."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's limit."""


class ValidationError(APIError):
    """422: ``errors`` maps each failing field to its messages."""


class RateLimitedError(APIError):
    """429: rate limit or quota; ``retry_after`` says when to try again."""


class ServerError(APIError):
    """5xx."""


class ServiceUnavailableError(ServerError):
    """503: a dependency of the server (Redis, the database) is down for now."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the API sends delta-seconds), None when absent or not one."""
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> APIError:
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    body = parsed if isinstance(parsed, dict) else {"detail": response.text[:500] or None}
    correlation_id = body.get("correlation_id") or response.headers.get("X-Correlation-ID")
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(
        status,
        body,
        correlation_id=str(correlation_id) if correlation_id else None,
        retry_after=retry_after_seconds(response),
    )
