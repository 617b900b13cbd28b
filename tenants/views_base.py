"""The base of every tenant API view: resolve the tenant, enter its scope, enforce limits.

Subclasses declare ``scope_map`` (HTTP method → scope) and implement their
handlers; they never see another tenant's rows because the scoped managers
filter by the ContextVar this class sets for the request's duration
(ARCHITECTURE habits 1 and 3). ``initial`` is final in spirit: override the
handlers, not the scoping.
"""

from __future__ import annotations

from contextvars import Token
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.server.api.exceptions import quota_exceeded
from tenants.authentication import APIKeyAuthentication
from tenants.context import _current_tenant_id
from tenants.models import APIKey, Membership, Role, Tenant, TenantStatus
from tenants.ratelimit import check_request_rate

READ, WRITE, REVIEW, ADMIN = "read", "write", "review", "admin"
DEFAULT_SCOPE_MAP: dict[str, str] = {
    "GET": READ,
    "HEAD": READ,
    "OPTIONS": READ,
    "POST": WRITE,
    "PUT": WRITE,
    "PATCH": WRITE,
    "DELETE": WRITE,
}
ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.VIEWER: frozenset({READ}),
    Role.REVIEWER: frozenset({READ, REVIEW}),
    Role.OPERATOR: frozenset({READ, WRITE, REVIEW}),
    Role.OWNER: frozenset({READ, WRITE, REVIEW, ADMIN}),
}
TENANT_HEADER = "X-Tenant"


def _next_minute() -> str:
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return now.isoformat().replace("+00:00", "Z")


class TenantScopedAPIView(APIView):
    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes: ClassVar[list[Any]] = []  # scope checks below replace them
    scope_map: ClassVar[dict[str, str]] = DEFAULT_SCOPE_MAP

    tenant: Tenant
    _scope_token: Token[int | None] | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        tenant, scopes, key = self._resolve_tenant(request)
        self.tenant = tenant
        request.tenant = tenant  # type: ignore[attr-defined]
        self._scope_token = _current_tenant_id.set(tenant.pk)
        needed = self.scope_map.get(request.method or "GET", WRITE)
        if needed not in scopes:
            raise exceptions.PermissionDenied(f"This action needs the {needed!r} scope.")
        quotas = tenant.quotas
        decision = check_request_rate(
            tenant_id=tenant.pk,
            key_id=key.pk if key else None,
            tenant_limit=quotas.requests_per_minute,
            key_limit=quotas.requests_per_minute_per_key,
        )
        if not decision.allowed:
            raise quota_exceeded(
                decision.limit_name or "requests_per_minute", decision.retry_after, _next_minute()
            )

    def _resolve_tenant(self, request: Request) -> tuple[Tenant, frozenset[str], APIKey | None]:
        if isinstance(request.auth, APIKey):
            return request.auth.tenant, frozenset(request.auth.scopes), request.auth
        user = request.user
        if not user or not user.is_authenticated:
            raise exceptions.NotAuthenticated()
        slug = request.headers.get(TENANT_HEADER)
        if user.is_superuser:
            tenant = Tenant.objects.filter(slug=slug).first() if slug else None
            if tenant is None:
                raise exceptions.NotFound(f"Send {TENANT_HEADER}: <tenant slug> to pick a tenant.")
            return tenant, ROLE_SCOPES[Role.OWNER], None
        # Memberships are looked up for this user before any scope exists.
        memberships = Membership.unscoped.select_related("tenant").filter(user=user)
        if slug:
            memberships = memberships.filter(tenant__slug=slug)
        found = list(memberships[:2])
        if len(found) != 1:
            raise exceptions.NotFound(
                "No tenant membership." if not found else f"Send {TENANT_HEADER} to pick a tenant."
            )
        membership = found[0]
        if membership.tenant.status != TenantStatus.ACTIVE:
            raise exceptions.PermissionDenied(f"Tenant is {membership.tenant.status}.")
        return membership.tenant, ROLE_SCOPES[membership.role], None

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        deprecations = getattr(request, "deprecations", None)
        if deprecations:
            response["Deprecation"] = "true"
            response["X-Deprecation-Notice"] = "; ".join(deprecations)
        return response

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            if self._scope_token is not None:
                _current_tenant_id.reset(self._scope_token)
                self._scope_token = None
