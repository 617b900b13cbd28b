"""The one error body of the API (SPEC 5): ``{detail, error_type, correlation_id, timestamp}``.

Validation errors answer 422 (not DRF's 400) and name the failing fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from kombu.exceptions import OperationalError as BrokerUnavailable
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agentflow.core.api.exceptions import ContractError
from agentflow.core.context import current_correlation_id

log = structlog.get_logger(__name__)


def error_body(detail: str, error_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "detail": detail,
        "error_type": error_type,
        "correlation_id": current_correlation_id(),
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **extra,
    }


def _error_type(exc: Exception) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "validation_error"
    if isinstance(exc, Http404 | exceptions.NotFound):
        return "not_found"
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "authentication_failed"
    if isinstance(exc, exceptions.PermissionDenied) and exc.default_code != "permission_denied":
        return str(exc.default_code)  # e.g. tenant_inactive
    if isinstance(exc, PermissionDenied | exceptions.PermissionDenied):
        return "permission_denied"
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited"
    if isinstance(exc, exceptions.ParseError):
        return "malformed_request"
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return "unsupported_media_type"
    if isinstance(exc, exceptions.MethodNotAllowed):
        return "method_not_allowed"
    if isinstance(exc, exceptions.NotAcceptable):
        return "not_acceptable"
    code = getattr(exc, "default_code", None)
    return str(code) if code else "error"


# While Redis (cache, broker, pub/sub) is unreachable, what needs it answers 503 with
# Retry-After: the client's retry, not our bug. Reads of PostgreSQL keep working.
SERVICE_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    BrokerUnavailable,
)
RETRY_AFTER_SECONDS = 5


def service_unavailable_body() -> dict[str, Any]:
    return error_body(
        "A backing service is temporarily unavailable; retry shortly.",
        "service_unavailable",
        retry_after=RETRY_AFTER_SECONDS,
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, SERVICE_UNAVAILABLE_ERRORS):
        log.warning("service.unavailable", error=f"{type(exc).__name__}: {exc}")
        return Response(
            service_unavailable_body(),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("Request body too large.", "payload_too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # unhandled: Django's 500 path (logged with the correlation id)
    if isinstance(exc, ContractError):
        response.data = error_body(str(exc.detail), exc.error_type, **exc.extra)
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = error_body("Request validation failed.", "validation_error", errors=fields)
        response.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        body = error_body(str(detail) or "Request failed.", _error_type(exc))
        if isinstance(exc, Http404):
            body["detail"] = "Not found."
    response.data = body
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("Not found.", "not_found"), status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("Internal server error.", "server_error"), status=500)
