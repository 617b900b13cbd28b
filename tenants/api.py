"""Tenant administration (platform admins) and a tenant's own usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.server.api.exceptions import unprocessable
from agentflow.server.api.pagination import paginate, sort_queryset
from agentflow.server.api.schema import IDEMPOTENCY_PARAMETER, LIST_PARAMETERS, envelope, errors
from agentflow.server.api.serializers import StrictSerializer
from governance.audit import Actor
from tenants import services
from tenants.authentication import APIKeyAuthentication
from tenants.context import tenant_scope
from tenants.idempotency import idempotent
from tenants.models import APIKey, Tenant, TenantStatus, UsageDay
from tenants.quotas import Tier
from tenants.roles import is_platform_admin
from tenants.views_base import TenantScopedAPIView


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


class QuotasSerializer(serializers.Serializer):
    requests_per_minute = serializers.IntegerField(allow_null=True)
    requests_per_minute_per_key = serializers.IntegerField(allow_null=True)
    concurrent_runs = serializers.IntegerField(allow_null=True)
    runs_per_month = serializers.IntegerField(allow_null=True)
    tokens_per_month = serializers.IntegerField(allow_null=True)
    dollars_per_month = serializers.CharField(allow_null=True)
    knowledge_bytes = serializers.IntegerField(allow_null=True)
    agents = serializers.IntegerField(allow_null=True)


class TenantSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    tier = serializers.ChoiceField(choices=Tier.ALL)
    status = serializers.ChoiceField(choices=TenantStatus.values)
    quotas = QuotasSerializer()
    quota_overrides = serializers.DictField()
    created_at = serializers.CharField(allow_null=True)


class KeySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.CharField(allow_null=True)
    last_used_at = serializers.CharField(allow_null=True)
    revoked_at = serializers.CharField(allow_null=True)
    expires_at = serializers.CharField(allow_null=True)


class IssuedKeySerializer(KeySerializer):
    key = serializers.CharField(help_text="The API key. Shown only in this response.")


class UsageDaySerializer(serializers.Serializer):
    day = serializers.CharField()
    runs = serializers.IntegerField()
    tokens = serializers.IntegerField()
    dollars = serializers.CharField()


class UsageTotalsSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    tokens = serializers.IntegerField()
    dollars = serializers.CharField()


class UsageSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    quotas = QuotasSerializer()
    this_month = UsageTotalsSerializer()
    days = UsageDaySerializer(many=True)


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.pk,
        "name": tenant.name,
        "slug": tenant.slug,
        "tier": tenant.tier,
        "status": tenant.status,
        "quotas": tenant.quotas.as_json(),
        "quota_overrides": tenant.quota_overrides,
        "created_at": _iso(tenant.created_at),
    }


def key_json(key: APIKey) -> dict[str, Any]:
    return {
        "id": key.pk,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "created_at": _iso(key.created_at),
        "last_used_at": _iso(key.last_used_at),
        "revoked_at": _iso(key.revoked_at),
        "expires_at": _iso(key.expires_at),
    }


def usage_json(tenant: Tenant) -> dict[str, Any]:
    month = services.usage_this_month(tenant.pk)
    since = datetime.now(UTC).date() - timedelta(days=30)
    with tenant_scope(tenant.pk):
        days = [d.as_json() for d in UsageDay.objects.filter(day__gte=since).order_by("day")]
    return {
        "tenant_id": tenant.pk,
        "quotas": tenant.quotas.as_json(),
        "this_month": {**month, "dollars": str(month["dollars"])},
        "days": days,
    }


STATUS_PARAM = OpenApiParameter("status", OpenApiTypes.STR, enum=TenantStatus.values)


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


class TenantListView(PlatformAdminView):
    sortable = ("id", "name", "slug", "created_at")

    @extend_schema(
        operation_id="tenants_list",
        parameters=[*LIST_PARAMETERS, STATUS_PARAM],
        responses={200: envelope(TenantSerializer), **errors(403, 422)},
    )
    def get(self, request: Request) -> Response:
        queryset: QuerySet[Tenant] = Tenant.objects.all()
        wanted = request.query_params.get("status")
        if wanted:
            queryset = queryset.filter(status=wanted)
        queryset = sort_queryset(request, queryset, self.sortable, "id")
        return paginate(request, queryset, lambda page: [tenant_json(t) for t in page])

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
            tenant_json(tenant),
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/tenants/{tenant.pk}"},
        )


class TenantDetailView(PlatformAdminView):
    @extend_schema(
        operation_id="tenants_retrieve", responses={200: TenantSerializer, **errors(403, 404)}
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        return Response(tenant_json(self.tenant(tenant_id)))

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
        return Response(tenant_json(tenant))


class TenantStatusView(PlatformAdminView):
    new_status: str = TenantStatus.ACTIVE

    @extend_schema(request=None, responses={200: TenantSerializer, **errors(403, 404)})
    def post(self, request: Request, tenant_id: int) -> Response:
        tenant = services.set_status(
            actor=self.actor(request), tenant=self.tenant(tenant_id), status=self.new_status
        )
        return Response(tenant_json(tenant))


class TenantKeysView(PlatformAdminView):
    @extend_schema(
        operation_id="tenant_keys_list",
        parameters=LIST_PARAMETERS,
        responses={200: envelope(KeySerializer), **errors(403, 404, 422)},
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        tenant = self.tenant(tenant_id)
        with tenant_scope(tenant.pk):
            return paginate(
                request, APIKey.objects.order_by("id"), lambda page: [key_json(k) for k in page]
            )

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
        return Response(
            {**key_json(issued.key), "key": issued.plaintext}, status=status.HTTP_201_CREATED
        )


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
        return Response(key_json(key))


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
        return Response(
            {**key_json(issued.key), "key": issued.plaintext}, status=status.HTTP_201_CREATED
        )


class TenantUsageView(PlatformAdminView):
    @extend_schema(
        operation_id="tenant_usage", responses={200: UsageSerializer, **errors(403, 404)}
    )
    def get(self, request: Request, tenant_id: int) -> Response:
        return Response(usage_json(self.tenant(tenant_id)))


class OwnUsageView(TenantScopedAPIView):
    """A tenant's own quotas and consumption (API key or dashboard session)."""

    @extend_schema(
        operation_id="usage_retrieve", responses={200: UsageSerializer, **errors(401, 403)}
    )
    def get(self, request: Request) -> Response:
        return Response(usage_json(self.tenant))
