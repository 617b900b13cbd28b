"""Query filters and sorting of the list endpoints, through django-filter and DRF.

A list view (``ListEndpoint``) declares a ``filterset_class`` (its query filters),
``ordering_fields`` (the ``sort_by`` values, each naming a field or an expression of the
model) and ``ordering`` (the default ``sort_by``). Invalid values are the same 422 as every
other validation error (``unprocessable``); the OpenAPI schema reads its parameters from
the same classes (``agentflow.core.api.schema``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import django_filters
from django import forms
from django.db.models import F, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.filters import BaseFilterBackend, OrderingFilter
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import unprocessable
from agentflow.core.api.pagination import EnvelopePagination

SORT_BY, SORT_ORDER = "sort_by", "sort_order"
BOOLEAN_CHOICES = [("true", "true"), ("false", "false")]


class StrictFilterBackend(DjangoFilterBackend):
    """The view's FilterSet; its form errors are our 422 body (one message list per field)."""

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> Any:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            errors = {name: [str(m) for m in found] for name, found in filterset.errors.items()}
            raise unprocessable(f"{next(iter(errors))} is invalid.", errors)
        return filterset.qs


class SortOrdering(OrderingFilter):
    """``sort_by`` (one of the view's ``ordering_fields``, default its ``ordering``) and
    ``sort_order`` (asc or desc, default desc), the primary key breaking ties so pages never
    overlap. A view may set ``unsorted_ordering`` (its natural order when ``sort_by`` is
    absent) and ``ordering_nulls_last`` (rows without the value at the end either way)."""

    ordering_param = SORT_BY

    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> Any:
        fields = sortable_fields(view)
        if not fields:
            return queryset
        sort_by = request.query_params.get(SORT_BY) or ""
        sort_order = (request.query_params.get(SORT_ORDER) or "desc").lower()
        errors: dict[str, list[str]] = {}
        if sort_by and sort_by not in fields:
            errors[SORT_BY] = [f"Use one of: {', '.join(fields)}."]
        if sort_order not in {"asc", "desc"}:
            errors[SORT_ORDER] = ["Use asc or desc."]
        if errors:
            detail = "sort_by is not sortable." if SORT_BY in errors else "sort_order is invalid."
            raise unprocessable(detail, errors)
        unsorted: Sequence[str] = getattr(view, "unsorted_ordering", ())
        if not sort_by and unsorted:
            return queryset.order_by(*unsorted)
        return _ordered(queryset, fields[sort_by or view.ordering], sort_order, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        fields = sortable_fields(view)
        if not fields:
            return []
        default = "" if getattr(view, "unsorted_ordering", ()) else f", default {view.ordering}"
        return [
            {
                "name": SORT_BY,
                "required": False,
                "in": "query",
                "description": f"One of: {', '.join(fields)}{default}",
                "schema": {"type": "string"},
            },
            {
                "name": SORT_ORDER,
                "required": False,
                "in": "query",
                "schema": {"type": "string", "enum": ["asc", "desc"]},
            },
        ]


def sortable_fields(view: Any) -> dict[str, str]:
    """``sort_by`` value → model field, from the view's ``ordering_fields``."""
    declared: Mapping[str, str] | Sequence[str] = getattr(view, "ordering_fields", None) or ()
    if isinstance(declared, Mapping):
        return dict(declared)
    return {name: name for name in declared}


def _ordered(queryset: QuerySet[Any], field: str, sort_order: str, view: Any) -> QuerySet[Any]:
    if getattr(view, "ordering_nulls_last", False):
        expression = F(field)
        if sort_order == "desc":
            return queryset.order_by(expression.desc(nulls_last=True), "-pk")
        return queryset.order_by(expression.asc(nulls_last=True), "pk")
    prefix = "-" if sort_order == "desc" else ""
    return queryset.order_by(f"{prefix}{field}", f"{prefix}pk")


class ListEndpoint:
    """A list view's filters, sort and page, through DRF's backends and paginator: mix it
    into a view and answer ``GET`` with ``self.list_response(...)``."""

    pagination_class: ClassVar[type[EnvelopePagination]] = EnvelopePagination
    filter_backends: ClassVar[Sequence[type[BaseFilterBackend]]] = (
        StrictFilterBackend,
        SortOrdering,
    )
    filterset_class: ClassVar[type[django_filters.FilterSet] | None] = None
    ordering_fields: ClassVar[Mapping[str, str] | Sequence[str]] = ()
    ordering: ClassVar[str] = ""

    def list_response(
        self,
        request: Request,
        queryset: QuerySet[Any],
        serializer_class: Any,
        context: dict[str, Any] | None = None,
    ) -> Response:
        view: Any = self  # an APIView too, once mixed in
        for backend in self.filter_backends:
            queryset = backend().filter_queryset(request, queryset, view)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=view)
        data = serializer_class(page, many=True, context=context or {}).data
        return paginator.get_paginated_response(data)


# --- filters with the messages of our 422s ---------------------------------------------------


def choice_filter(choices: Sequence[str], **kwargs: Any) -> django_filters.ChoiceFilter:
    """One of ``choices``; anything else is "Use one of: ..."."""
    return django_filters.ChoiceFilter(
        choices=[(value, value) for value in choices],
        error_messages={"invalid_choice": f"Use one of: {', '.join(choices)}."},
        **kwargs,
    )


def flag_filter(field_name: str, *, is_null: bool = False, **kwargs: Any) -> Any:
    """``true`` or ``false`` (nothing else: no yes/1/on), on a boolean field or, with
    ``is_null``, on whether ``field_name`` is set (``true`` = set)."""
    lookup = "isnull" if is_null else "exact"

    def apply(queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        wanted = value == "true"
        return queryset.filter(**{f"{field_name}__{lookup}": not wanted if is_null else wanted})

    return django_filters.ChoiceFilter(
        choices=BOOLEAN_CHOICES,
        method=apply,
        error_messages={"invalid_choice": "Use true or false."},
        **kwargs,
    )


def text_filter(max_length: int | None = 100, **kwargs: Any) -> django_filters.CharFilter:
    """Text as sent (not stripped), at most ``max_length`` characters when given."""
    return django_filters.CharFilter(
        max_length=max_length,
        strip=False,
        error_messages={"max_length": f"At most {max_length} characters."},
        **kwargs,
    )


def uuid_filter(**kwargs: Any) -> django_filters.UUIDFilter:
    return django_filters.UUIDFilter(error_messages={"invalid": "A UUID."}, **kwargs)


def prefix_filter(field_name: str, max_length: int | None = 100, **kwargs: Any) -> Any:
    """An exact value, or a prefix ending in ``*`` (``zendesk.*``)."""

    def apply(queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        if value.endswith("*"):
            return queryset.filter(**{f"{field_name}__startswith": value[:-1]})
        return queryset.filter(**{field_name: value})

    return text_filter(max_length, method=apply, **kwargs)


class ZonedDateTimeField(forms.CharField):
    """ISO 8601 with a time zone, compared in UTC (PostgreSQL refuses offsets beyond
    +-15:59 that Python accepts)."""

    default_error_messages = {
        "invalid": "Use ISO 8601.",
        "naive": "Add Z or an offset.",
        "range": "Out of range.",
    }

    def to_python(self, value: Any) -> datetime | None:  # type: ignore[override]
        raw = super().to_python(value)
        if not raw:
            return None
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise forms.ValidationError(self.error_messages["invalid"], "invalid") from None
        if moment.tzinfo is None:
            raise forms.ValidationError(self.error_messages["naive"], "naive")
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError(self.error_messages["range"], "range") from None


class ZonedDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = ZonedDateTimeField


class ChoiceListField(forms.CharField):
    """Comma-separated values, each one of ``allowed``."""

    def __init__(self, *, allowed: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = list(allowed)

    def to_python(self, value: Any) -> list[str] | None:  # type: ignore[override]
        raw = super().to_python(value)
        if not raw:
            return None
        values = [item.strip() for item in raw.split(",") if item.strip()]
        if not values or any(item not in self.allowed for item in values):
            raise forms.ValidationError(f"Use one of: {', '.join(self.allowed)}.")
        return values


class ChoiceListFilter(django_filters.CharFilter):
    """Rows whose field is any of the comma-separated values (``?kind=a,b``)."""

    field_class = ChoiceListField

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(lookup_expr="in", **kwargs)
