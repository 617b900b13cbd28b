"""OpenAPI building blocks: the error body, list envelope names, filter parameters, key auth."""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    error_type = serializers.CharField()
    correlation_id = serializers.CharField(allow_null=True)
    timestamp = serializers.DateTimeField()
    # The stubs type `errors` as Serializer.errors; DRF's metaclass makes it a declared field.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
    limit = serializers.CharField(required=False)
    resets_at = serializers.CharField(required=False, allow_null=True)
    retry_after = serializers.IntegerField(required=False)


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    description="Replays the first response for 24 h; another body with the same key is 422.",
)


class AutoSchema(SpectacularAutoSchema):
    """Names a list's envelope ``<Item>List`` (``AgentList``), as the API has always had."""

    def get_paginated_name(self, serializer_name: str) -> str:
        return f"{serializer_name}List"


class FilterSetParameters(DjangoFilterExtension):
    """The query parameters of a list view's FilterSet, read from the FilterSet itself (our
    views have no class-level queryset to take the model from: it is the FilterSet's)."""

    target_class = "agentflow.core.api.filters.StrictFilterBackend"
    match_subclasses = True
    priority = 1

    def get_schema_operation_parameters(self, auto_schema: Any, *args: Any, **kwargs: Any) -> Any:
        filterset_class = getattr(auto_schema.view, "filterset_class", None)
        if filterset_class is None:
            return []
        model = filterset_class._meta.model
        return [
            parameter
            for name, field in filterset_class.base_filters.items()
            for parameter in self.resolve_filter_field(
                auto_schema, model, filterset_class, name, field
            )
        ]


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer) for code in codes}


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "af_<prefix>_<secret>"}


_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_WRITE_METHODS = {"post", "put", "patch"}
_DESCRIPTIONS = {
    "400": "Malformed request: a NUL or non-UTF-8 path or query, or a malformed body.",
    "401": "Missing or invalid credentials.",
    "403": "Not allowed for this key, role or tenant status.",
    "413": "Request body too large.",
    "414": "Query string too long.",
    "415": "Unsupported media type.",
    "429": "Rate limit or quota exhausted; see Retry-After.",
}


def add_common_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Document the errors every API operation can answer, whatever its view says.

    Authentication, rate limiting and body parsing happen before any handler runs, so
    their answers belong to every operation rather than to each view's annotations.
    """
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            # The request line is checked before any view (agentflow/server/middleware.py).
            codes = ["400", "401", "403", "414", "429"]
            if method in _WRITE_METHODS and "requestBody" in operation:
                codes += ["413", "415"]
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(
                    code,
                    {
                        "description": _DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    },
                )
    return result
