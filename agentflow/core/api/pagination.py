"""List envelope ``{results, total, limit, offset, has_more}`` with strict paging and sorting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from agentflow.core.api.exceptions import unprocessable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


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


def sort_queryset(
    request: Request, queryset: QuerySet[Any], sortable: Sequence[str], default: str
) -> QuerySet[Any]:
    sort_by = request.query_params.get("sort_by") or default
    sort_order = (request.query_params.get("sort_order") or "desc").lower()
    if sort_by not in sortable:
        raise unprocessable(
            "sort_by is not sortable.", {"sort_by": [f"Use one of: {', '.join(sortable)}."]}
        )
    if sort_order not in {"asc", "desc"}:
        raise unprocessable("sort_order is invalid.", {"sort_order": ["Use asc or desc."]})
    prefix = "-" if sort_order == "desc" else ""
    return queryset.order_by(f"{prefix}{sort_by}", f"{prefix}pk")


def paginate(
    request: Request,
    queryset: QuerySet[Any],
    serializer: type[BaseSerializer[Any]] | Callable[[list[Any]], Any],
    context: dict[str, Any] | None = None,
) -> Response:
    """One page of ``queryset``, each row written by ``serializer`` (a list serializer of its
    own may batch-load what the page's rows need); a function of the page still works for
    the endpoints not yet serializer-sourced."""
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    total = queryset.count()
    page = list(queryset[offset : offset + limit])
    if isinstance(serializer, type):
        results = serializer(page, many=True, context=context or {}).data
    else:
        results = serializer(page)
    return Response(
        {
            "results": results,
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(page) < total,
        }
    )
