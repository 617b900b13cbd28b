"""Tenant administration (platform admins) and a tenant's own usage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import django_filters
from django.contrib.auth.models import User
from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.core.api.exceptions import unprocessable
from agentflow.core.api.filters import ListEndpoint, text_filter
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, errors
from agentflow.core.api.serializers import (
    AsIsCharField,
    AsIsChoiceField,
    AsIsDictField,
    AsIsIntegerField,
    AsIsListField,
    IsoDateTimeField,
    StrictSerializer,
)
from governance.audit import Actor
from tenants import services
from tenants.authentication import APIKeyAuthentication
from tenants.context import tenant_scope
from tenants.idempotency import idempotent
from tenants.models import APIKey, Tenant, TenantStatus
from tenants.quotas import Quotas, Tier
from tenants.roles import is_platform_admin
from tenants.views_base import TenantScopedAPIView

# --- output shapes: the response bodies and their OpenAPI schema -------------------------


class QuotasSerializer(serializers.Serializer):
    """A :class:`~tenants.quotas.Quotas`; ``None`` means unlimited."""

    requests_per_minute = AsIsIntegerField(allow_null=True)
    requests_per_minute_per_key = AsIsIntegerField(allow_null=True)
    concurrent_runs = AsIsIntegerField(allow_null=True)
    runs_per_month = AsIsIntegerField(allow_null=True)
    tokens_per_month = AsIsIntegerField(allow_null=True)
    dollars_per_month = serializers.CharField(allow_null=True)
    knowledge_bytes = AsIsIntegerField(allow_null=True)
    agents = AsIsIntegerField(allow_null=True)


class TenantSerializer(serializers.Serializer):
    id = AsIsIntegerField(source="pk")
    name = AsIsCharField()
    slug = AsIsCharField()
    tier = AsIsChoiceField(choices=Tier.ALL)
    status = AsIsChoiceField(choices=TenantStatus.values)
    quotas = QuotasSerializer()
    quota_overrides = AsIsDictField()
    created_at = IsoDateTimeField(allow_null=True)


class KeySerializer(serializers.Serializer):
    id = AsIsIntegerField(source="pk")
    name = AsIsCharField()
    prefix = AsIsCharField()
    scopes = AsIsListField(child=serializers.CharField())
    created_at = IsoDateTimeField(allow_null=True)
    last_used_at = IsoDateTimeField(allow_null=True)
    revoked_at = IsoDateTimeField(allow_null=True)
    expires_at = IsoDateTimeField(allow_null=True)


class IssuedKeySerializer(KeySerializer):
    """A new key (``services.IssuedKey``) with its plaintext, shown this one time only."""

    key = AsIsCharField(help_text="The API key. Shown only in this response.")

    def to_representation(self, instance: Any) -> Any:
        return {**KeySerializer(instance.key).data, "key": instance.plaintext}


class UsageDaySerializer(serializers.Serializer):
    day = serializers.CharField()  # str() of a date is its ISO form
    runs = AsIsIntegerField()
    tokens = AsIsIntegerField()
    dollars = serializers.CharField()


class UsageTotalsSerializer(serializers.Serializer):
    runs = AsIsIntegerField()
    tokens = AsIsIntegerField()
    dollars = serializers.CharField()


@dataclass(frozen=True)
class Usage:
    """A tenant's quotas, this month's totals and its last 30 days."""

    tenant_id: int
    quotas: Quotas
    this_month: dict[str, Any]
    days: list[dict[str, Any]]

    @classmethod
    def of(cls, tenant: Tenant) -> Usage:
        month = services.usage_this_month(tenant.pk)
        since = datetime.now(UTC).date() - timedelta(days=30)
        return cls(tenant.pk, tenant.quotas, month, services.usage_days(tenant.pk, since))


class UsageSerializer(serializers.Serializer):
    tenant_id = AsIsIntegerField()
    quotas = QuotasSerializer()
    this_month = UsageTotalsSerializer()
    days = UsageDaySerializer(many=True)


class TenantFilter(django_filters.FilterSet):
    # Unchecked, as ever: an unknown status matches no tenant.
    status = extend_schema_field({"type": "string", "enum": TenantStatus.values})(text_filter(None))

    class Meta:
        model = Tenant
        fields: list[str] = []


class TenantCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80, required=False)
    tier = serializers.ChoiceField(choices=Tier.ALL, required=False, default=Tier.FREE)
    quota_overrides = serializers.DictField(required=False, default=dict)


class TenantUpdateSerializer(StrictSerializer):
    tier = serializers.ChoiceField(choices=Tier.ALL, required=False)
    quota_overrides = serializers.DictField(required=False)


class KeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, default="default")
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=services.ALL_SCOPES), required=False, min_length=1
    )


class KeyRotateSerializer(StrictSerializer):
    overlap_seconds = serializers.IntegerField(
        min_value=0, max_value=7 * 86400, required=False, default=0
    )


class IsPlatformAdmin(BasePermission):
    """The one definition of platform admin (tenants.roles), as a DRF permission."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return is_platform_admin(request.user)


class PlatformAdminView(APIView):
    """Platform administration: staff users signed in to the dashboard, never API keys."""

    # Keys authenticate (so the answer is an honest 403, not "no credentials") but are never
    # staff: platform administration needs a staff user's session.
    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [IsPlatformAdmin]

    def actor(self, request: Request) -> Actor:
        return Actor("user", str(request.user.pk))

    def staff_user(self, request: Request) -> User:
        # IsPlatformAdmin let the request in, so this holds: a key's principal is never staff.
        if not isinstance(request.user, User):
            raise PermissionDenied
        return request.user

    def tenant(self, tenant_id: int) -> Tenant:
        tenant = Tenant.objects.filter(pk=tenant_id).first()
        if tenant is None:
            raise Http404
        return tenant


def _tenant_error(exc: services.TenantError, field: str = "non_field_errors") -> Exception:
    return unprocessable(str(exc), {field: [str(exc)]})


class TenantListView(ListEndpoint, PlatformAdminView):
    filterset_class = TenantFilter
    ordering_fields = ("id", "name", "slug", "created_at")
    ordering = "id"

    @extend_schema(
        operation_id="tenants_list",
        responses={200: TenantSerializer(many=True), **errors(403, 422)},
    )
    def get(self, request: Request) -> Response:
        return self.list_response(request, Tenant.objects.all(), TenantSerializer)

    @extend_schema(
        operation_id="tenants_create",
        request=TenantCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: TenantSerializer, **errors(403, 409, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = TenantCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            tenant = services.create_tenant(actor=self.actor(request), **data.validated_data)
        except services.TenantError as exc:
            raise _tenant_error(exc) from exc
        return Response(
            TenantSerializer(tenant).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/tenants/{tenant.pk}"},
        )


class TenantDetailView(PlatformAdminView):
    @extend_schema(
        operation_id="tenants_retrieve", responses={200: TenantSerializer, **errors(403, 404)}
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        return Response(TenantSerializer(self.tenant(tenant_id)).data)

    @extend_schema(
        operation_id="tenants_update",
        request=TenantUpdateSerializer,
        responses={200: TenantSerializer, **errors(403, 404, 422)},
    )
    def patch(self, request: Request, tenant_id: int) -> Response:
        tenant = self.tenant(tenant_id)
        data = TenantUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            tenant = services.update_quotas(
                actor=self.actor(request),
                tenant=tenant,
                tier=data.validated_data.get("tier"),
                overrides=data.validated_data.get("quota_overrides", tenant.quota_overrides),
            )
        except services.TenantError as exc:
            raise _tenant_error(exc, "quota_overrides") from exc
        return Response(TenantSerializer(tenant).data)


class TenantStatusView(PlatformAdminView):
    new_status: str = TenantStatus.ACTIVE

    @extend_schema(request=None, responses={200: TenantSerializer, **errors(403, 404)})
    def post(self, request: Request, tenant_id: int) -> Response:
        tenant = services.set_status(
            actor=self.actor(request), tenant=self.tenant(tenant_id), status=self.new_status
        )
        return Response(TenantSerializer(tenant).data)


class TenantKeysView(ListEndpoint, PlatformAdminView):
    @extend_schema(
        operation_id="tenant_keys_list",
        responses={200: KeySerializer(many=True), **errors(403, 404, 422)},
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        tenant = self.tenant(tenant_id)
        with tenant_scope(tenant.pk):
            return self.list_response(request, APIKey.objects.order_by("id"), KeySerializer)

    @extend_schema(
        operation_id="tenant_keys_create",
        request=KeyCreateSerializer,
        responses={201: IssuedKeySerializer, **errors(403, 404, 422)},
    )
    def post(self, request: Request, tenant_id: int) -> Response:
        tenant = self.tenant(tenant_id)
        data = KeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.issue_key(
            actor=self.actor(request),
            tenant=tenant,
            created_by=self.staff_user(request),
            **data.validated_data,
        )
        # The only time the key is ever shown.
        return Response(IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


class _TenantKeyView(PlatformAdminView):
    def key(self, tenant_id: int, key_id: int) -> APIKey:
        tenant = self.tenant(tenant_id)
        with tenant_scope(tenant.pk):
            key = APIKey.objects.filter(pk=key_id).first()
        if key is None:
            raise Http404
        return key


class TenantKeyDetailView(_TenantKeyView):
    @extend_schema(
        operation_id="tenant_keys_revoke", responses={200: KeySerializer, **errors(403, 404)}
    )
    def delete(self, request: Request, tenant_id: int, key_id: int) -> Response:
        key = services.revoke_key(actor=self.actor(request), key=self.key(tenant_id, key_id))
        return Response(KeySerializer(key).data)


class TenantKeyRotateView(_TenantKeyView):
    @extend_schema(
        operation_id="tenant_keys_rotate",
        request=KeyRotateSerializer,
        responses={201: IssuedKeySerializer, **errors(403, 404, 422)},
    )
    def post(self, request: Request, tenant_id: int, key_id: int) -> Response:
        data = KeyRotateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            issued = services.rotate_key(
                actor=self.actor(request),
                key=self.key(tenant_id, key_id),
                overlap=timedelta(seconds=data.validated_data["overlap_seconds"]),
            )
        except services.TenantError as exc:
            raise _tenant_error(exc) from exc
        return Response(IssuedKeySerializer(issued).data, status=status.HTTP_201_CREATED)


class TenantUsageView(PlatformAdminView):
    @extend_schema(
        operation_id="tenant_usage", responses={200: UsageSerializer, **errors(403, 404)}
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        return Response(UsageSerializer(Usage.of(self.tenant(tenant_id))).data)


class OwnUsageView(TenantScopedAPIView):
    """A tenant's own quotas and consumption (API key or dashboard session)."""

    @extend_schema(
        operation_id="usage_retrieve", responses={200: UsageSerializer, **errors(401, 403)}
    )
    def get(self, request: Request) -> Response:
        return Response(UsageSerializer(Usage.of(self.tenant)).data)
