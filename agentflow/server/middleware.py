"""Correlation id and request metrics for every HTTP response."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from opentelemetry import trace

from agentflow.core.conf import setting_int
from agentflow.core.context import accept_correlation_id, bind_correlation_id, correlation_id_var
from agentflow.core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from agentflow.server.errors import (
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE_ERRORS,
    error_body,
    service_unavailable_body,
)

log = structlog.get_logger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
DEFAULT_MAX_QUERY_STRING_BYTES = 16384


class CorrelationIdMiddleware:
    """Accepts a safe ``X-Correlation-ID`` or mints one, and returns it on every response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = accept_correlation_id(request.headers.get(CORRELATION_HEADER))
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        token = bind_correlation_id(correlation_id)
        span = trace.get_current_span()  # the request's, when tracing is on
        if span.is_recording():
            span.set_attribute("agentflow.correlation_id", correlation_id)
        try:
            response = self.get_response(request)
        finally:
            correlation_id_var.reset(token)  # type: ignore[arg-type]
            structlog.contextvars.clear_contextvars()
        response[CORRELATION_HEADER] = correlation_id
        return response


class RequestMetricsMiddleware:
    """Counts and times requests by URL route name (never the raw path: bounded labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.view_name or match.route) if match else "unmatched"
        HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, route, f"{response.status_code // 100}xx").inc()
        return response


class BodySizeLimitMiddleware:
    """413 before reading a body whose declared length passes the limit (SPEC 14: huge bodies)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:

        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        upload_limit = setting_int("MAX_UPLOAD_BYTES")
        if declared.isdigit() and int(declared) > max(limit or 0, upload_limit):
            return JsonResponse(
                error_body(
                    f"Request body of {declared} bytes exceeds the limit of "
                    f"{max(limit or 0, upload_limit)} bytes.",
                    "payload_too_large",
                ),
                status=413,
            )
        return self.get_response(request)


def _raw_path(request: HttpRequest) -> bytes:
    """The request path as the client sent it, percent-decoded to bytes."""
    scope = getattr(request, "scope", None)
    if scope is not None:  # ASGI: the server keeps the undecoded path
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        return unquote_to_bytes(raw)
    # WSGI (and Django's test client): Django re-percent-encodes the bytes that were not UTF-8.
    return unquote_to_bytes(request.path_info)


def _unreadable(raw: bytes) -> str | None:
    """Why ``raw`` (decoded path or query bytes) is no text we accept, or None."""
    if b"\x00" in raw:
        return "contains a NUL character"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    return None


class RequestLineMiddleware:
    """Refuses, at the edge, a request line no view could handle (issue 13, item 7).

    A query string longer than ``MAX_QUERY_STRING_BYTES`` is a 414; a path or query with a
    NUL character (PostgreSQL text cannot hold one: the filters that met it raised 500s) or
    with percent-encoded bytes that are not UTF-8 is a 400. Both in the API's error shape,
    before any view, session or database work.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:

        query = str(request.META.get("QUERY_STRING", ""))
        limit = int(getattr(settings, "MAX_QUERY_STRING_BYTES", DEFAULT_MAX_QUERY_STRING_BYTES))
        if len(query) > limit:
            return JsonResponse(
                error_body(
                    f"The query string of {len(query)} bytes exceeds the limit of {limit} bytes.",
                    "uri_too_long",
                ),
                status=414,
            )
        for part, raw in (
            ("path", _raw_path(request)),
            # "+" is a space in a query; decoded as Django's QueryDict will decode it.
            ("query string", unquote_to_bytes(query.replace("+", " "))),
        ):
            if (why := _unreadable(raw)) is not None:
                return JsonResponse(
                    error_body(f"The request's {part} {why}.", "malformed_request"), status=400
                )
        return self.get_response(request)


class ServiceUnavailableMiddleware:
    """Redis down under a page or view outside DRF: 503 with Retry-After, not a 500.

    DRF views get the same answer from ``api_exception_handler``; this covers the
    dashboard and anything else Django serves directly.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, SERVICE_UNAVAILABLE_ERRORS):
            return None
        log.warning("service.unavailable", path=request.path, error=type(exception).__name__)
        response = JsonResponse(service_unavailable_body(), status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
