"""Webhook HTTP surface: endpoint management (API key / session) and deliveries (signature).

Deliveries authenticate by signature only: no API key, session or CSRF applies. Every
refusal of authenticity (unknown endpoint, endpoint of another provider, missing or bad
signature, stale timestamp, a secret of another tenant) is the same ``401`` body, so the
answer reveals nothing about which endpoints exist. They are left out of the OpenAPI
schema (which describes the API-key API); docs/api.md documents them for senders.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import structlog
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.core.api.exceptions import ContractError, unprocessable
from agentflow.core.api.filters import ListEndpoint
from agentflow.core.api.parsers import TooDeeplyNested, check_depth
from agentflow.core.api.schema import errors
from agentflow.core.api.serializers import (
    AsIsCharField,
    AsIsChoiceField,
    StrictSerializer,
    ZDateTimeField,
)
from agentflow.core.conf import setting_int
from agentflow.core.metrics import WEBHOOK_DELIVERIES
from learning.models import WebhookEndpoint, WebhookProvider
from learning.webhooks import services
from learning.webhooks.providers import BadPayload, Rejected
from tenants.authentication import actor_for
from tenants.views_base import ADMIN, DEFAULT_SCOPE_MAP, READ, TenantScopedAPIView

log = structlog.get_logger(__name__)


# --- serializers ---------------------------------------------------------------------------


class EndpointSerializer(serializers.Serializer):
    """An endpoint; its ``url`` is absolute, built from the request in the context."""

    id = serializers.UUIDField()
    provider = AsIsChoiceField(choices=WebhookProvider.values)
    name = AsIsCharField()
    url = serializers.SerializerMethodField(help_text="Where the provider must deliver (POST).")
    created_at = ZDateTimeField()
    rotated_at = ZDateTimeField(allow_null=True)
    previous_secret_expires_at = ZDateTimeField(
        allow_null=True, help_text="Until then the secret before the last rotation still verifies."
    )

    @extend_schema_field(serializers.CharField())
    def get_url(self, endpoint: WebhookEndpoint) -> str:
        request: Request = self.context["request"]
        return request.build_absolute_uri(f"/api/v1/webhooks/{endpoint.provider}/{endpoint.pk}")


class IssuedEndpointSerializer(EndpointSerializer):
    """A new or rotated endpoint (``services.IssuedSecret``) with its secret, shown once."""

    secret = serializers.CharField(
        allow_null=True,
        help_text="The generated secret: shown this once, never again. Null when you set it.",
    )

    def to_representation(self, instance: Any) -> Any:
        body = EndpointSerializer(instance.endpoint, context=self.context).data
        return {**body, "secret": instance.secret}


class EndpointCreateSerializer(StrictSerializer):
    provider = serializers.ChoiceField(choices=WebhookProvider.values)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    secret = serializers.CharField(
        required=False,
        min_length=services.MIN_SECRET_CHARS,
        max_length=services.MAX_SECRET_CHARS,
        help_text="The provider's signing secret (e.g. Slack's); omit to have one generated.",
    )


class EndpointRotateSerializer(StrictSerializer):
    secret = serializers.CharField(
        required=False, min_length=services.MIN_SECRET_CHARS, max_length=services.MAX_SECRET_CHARS
    )
    overlap_seconds = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=services.MAX_OVERLAP_SECONDS,
        help_text="How long the current secret keeps verifying (default 24 h; 0: stop now).",
    )


def _secret_error(exc: services.InvalidSecret) -> ContractError:
    return unprocessable("The secret is not usable.", {"secret": [str(exc)]})


def _endpoint_or_404(endpoint_id: Any) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise Http404
    return endpoint


# --- endpoint management -----------------------------------------------------------------------

ENDPOINT_SCOPES = {**DEFAULT_SCOPE_MAP, "GET": READ, "HEAD": READ, "POST": ADMIN, "DELETE": ADMIN}


class EndpointListView(ListEndpoint, TenantScopedAPIView):
    scope_map = ENDPOINT_SCOPES
    ordering_fields = ("created_at", "provider", "name")
    ordering = "created_at"

    @extend_schema(
        operation_id="webhook_endpoints_list",
        responses={200: EndpointSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.all()
        return self.list_response(request, endpoints, EndpointSerializer, {"request": request})

    # No Idempotency-Key: a replay would have to keep the shown-once secret in the database.
    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=EndpointCreateSerializer,
        responses={201: IssuedEndpointSerializer, **errors(401, 403, 422)},
    )
    def post(self, request: Request) -> Response:
        data = EndpointCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            issued = services.create_endpoint(
                actor=actor_for(request), tenant=self.tenant, **data.validated_data
            )
        except services.InvalidSecret as exc:
            raise _secret_error(exc) from exc
        return Response(
            IssuedEndpointSerializer(issued, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/webhooks/endpoints/{issued.endpoint.pk}"},
        )


class EndpointDetailView(TenantScopedAPIView):
    scope_map = ENDPOINT_SCOPES

    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        responses={200: EndpointSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        return Response(
            EndpointSerializer(_endpoint_or_404(endpoint_id), context={"request": request}).data
        )

    @extend_schema(
        operation_id="webhook_endpoints_destroy", responses={204: None, **errors(401, 403, 404)}
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        services.delete_endpoint(actor=actor_for(request), endpoint=_endpoint_or_404(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateView(TenantScopedAPIView):
    scope_map = ENDPOINT_SCOPES

    @extend_schema(
        operation_id="webhook_endpoints_rotate",
        request=EndpointRotateSerializer,
        responses={200: IssuedEndpointSerializer, **errors(401, 403, 404, 422)},
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = _endpoint_or_404(endpoint_id)
        data = EndpointRotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            issued = services.rotate_endpoint(
                actor=actor_for(request), endpoint=endpoint, **data.validated_data
            )
        except services.InvalidSecret as exc:
            raise _secret_error(exc) from exc
        return Response(IssuedEndpointSerializer(issued, context={"request": request}).data)


# --- deliveries ----------------------------------------------------------------------------------

UNAUTHENTIC = "Invalid or missing webhook signature."


class DeliveryView(APIView):
    """``POST /api/v1/webhooks/<provider>/<endpoint id>``: verify, dedup, store, answer."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes: list[Any] = []  # the raw body is what was signed: never parsed here
    provider: str = ""

    @extend_schema(exclude=True)
    def post(self, request: Request, endpoint_id: str) -> Response:
        limit = setting_int("WEBHOOK_MAX_BODY_BYTES")
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit:
            self._count("too_large")
            raise _too_large(limit)
        body = request.body
        if len(body) > limit:
            self._count("too_large")
            raise _too_large(limit)
        if (too_deep := _too_deeply_nested(body, request.headers)) is not None:
            self._count("bad_payload")
            raise unprocessable("The payload cannot be accepted.", {"body": [too_deep]})
        try:
            accepted = services.receive(self.provider, endpoint_id, request.headers, body)
        except Rejected as exc:
            self._count("rejected")
            log.info(
                "webhooks.rejected", provider=self.provider, endpoint=endpoint_id, why=str(exc)
            )
            raise ContractError(
                UNAUTHENTIC,
                status_code=status.HTTP_401_UNAUTHORIZED,
                error_type="authentication_failed",
                headers={"WWW-Authenticate": f'Signature realm="{self.provider} webhooks"'},
            ) from None
        except services.TenantInactive:
            self._count("tenant_inactive")
            raise ContractError(
                "The endpoint's tenant is not active.",
                status_code=status.HTTP_403_FORBIDDEN,
                error_type="tenant_inactive",
            ) from None
        except BadPayload as exc:
            self._count("bad_payload")
            raise unprocessable("The payload cannot be accepted.", {"body": [str(exc)]}) from None
        if accepted.challenge is not None:
            self._count("challenge")
            return Response({"challenge": accepted.challenge})
        self._count("duplicate" if accepted.duplicate else "accepted")
        return Response(
            {"event_id": accepted.event_id, "duplicate": accepted.duplicate},
            status=status.HTTP_200_OK if accepted.duplicate else status.HTTP_202_ACCEPTED,
        )

    def _count(self, verdict: str) -> None:
        # Deliveries arrive at the web process, whose /metrics is scraped: a plain counter.
        WEBHOOK_DELIVERIES.labels(self.provider, verdict).inc()


def _too_deeply_nested(body: bytes, headers: Any) -> str | None:
    """Why the body nests too deeply to parse safely (the JSON, or a Slack form's JSON
    ``payload``), or None. Checked before the signature: the bound is on the parsing."""
    text = body.decode("utf-8", "replace")
    if "application/x-www-form-urlencoded" in headers.get("Content-Type", ""):
        text = "".join(parse_qs(text).get("payload", []))
    try:
        check_depth(text)
    except TooDeeplyNested as exc:
        return str(exc)
    return None


def _too_large(limit: int) -> ContractError:
    return ContractError(
        f"Webhook bodies are limited to {limit} bytes.",
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        error_type="payload_too_large",
    )
