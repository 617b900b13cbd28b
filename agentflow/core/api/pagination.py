"""List envelope ``{results, total, limit, offset, has_more}`` with strict paging (DRF's
limit/offset pagination, answering a bad ``limit`` or ``offset`` with a 422)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import unprocessable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_OFFSET = 10**9


def _int_param(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise unprocessable(
            f"{name} must be an integer.", {name: ["Must be an integer."]}
        ) from None
    if not minimum <= value <= maximum:
        message = f"Must be between {minimum} and {maximum}."
        raise unprocessable(f"{name} is out of range.", {name: [message]})
    return value


class EnvelopePagination(LimitOffsetPagination):
    """DRF's limit/offset paging with our envelope; out-of-range values are 422s, not
    clamped (a client asking for 1,000 rows must learn it gets at most 200)."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _int_param(request, self.limit_query_param, DEFAULT_LIMIT, 1, MAX_LIMIT)

    def get_offset(self, request: Request) -> int:
        return _int_param(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def paginate_queryset(
        self, queryset: QuerySet[Any] | Sequence[Any], request: Request, view: Any = None
    ) -> list[Any]:
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        self.count = self.get_count(queryset)
        self.page = list(queryset[self.offset : self.offset + self.limit])
        return self.page

    def get_paginated_response(self, data: Any) -> Response:
        # All set by paginate_queryset (the stubs allow None).
        offset, total = self.offset or 0, self.count or 0
        return Response(
            {
                "results": data,
                "total": total,
                "limit": self.limit,
                "offset": offset,
                "has_more": offset + len(self.page) < total,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results", "total", "limit", "offset", "has_more"],
            "properties": {
                "results": schema,
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "has_more": {"type": "boolean"},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            _query_parameter(
                self.limit_query_param, f"1-{MAX_LIMIT}, default {DEFAULT_LIMIT}", "integer"
            ),
            _query_parameter(self.offset_query_param, ">= 0", "integer"),
        ]


def _query_parameter(name: str, description: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "required": False,
        "in": "query",
        "description": description,
        "schema": {"type": kind},
    }
