"""The base of every tenant API view: resolve the tenant, enter its scope, enforce limits.

Subclasses declare ``scope_map`` (HTTP method → scope) and implement their
handlers; they never see another tenant's rows because the scoped managers
filter by the tenant it enters with ``tenant_scope`` for the request's duration
(ARCHITECTURE habits 1 and 3). ``initial`` is final in spirit: override the
handlers, not the scoping.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.core.api.exceptions import quota_exceeded
from tenants.authentication import APIKeyAuthentication
from tenants.context import tenant_scope
from tenants.models import APIKey, Membership, Tenant, TenantStatus
from tenants.ratelimit import check_request_rate
from tenants.roles import (
    ADMIN,
    MEMBER_ROLES,
    PLATFORM_ADMIN,
    READ,
    REVIEW,
    ROLES,
    WRITE,
    is_platform_admin,
)

DEFAULT_SCOPE_MAP: dict[str, str] = {
    "GET": READ,
    "HEAD": READ,
    "OPTIONS": READ,
    "POST": WRITE,
    "PUT": WRITE,
    "PATCH": WRITE,
    "DELETE": WRITE,
}
# Views of the one role table (tenants.roles).
ROLE_SCOPES: dict[str, frozenset[str]] = {role: ROLES[role].scopes for role in MEMBER_ROLES}
PLATFORM_ADMIN_SCOPES = ROLES[PLATFORM_ADMIN].scopes
# What an API key's own scopes grant. A key is the tenant's machine credential, issued by a
# platform admin: "write" covers changes to agents, runs and reviews; tenant administration
# (roles, webhook endpoints, exports, erasure) needs the separate "admin" scope, so an
# integration's key can be issued without the power to grant roles or erase data.
KEY_SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({READ}),
    "write": frozenset({WRITE, REVIEW}),
    "admin": frozenset({ADMIN}),
}
TENANT_HEADER = "X-Tenant"
# Path parameters naming an object that belongs to an agent, with the lookup from the object
# to its agent: a member restricted to some agents (governance) gets 404 for the others'.
AGENT_BOUND_PARAMS: dict[str, tuple[str, str]] = {
    "agent_id": ("agentflow.Agent", "pk"),
    "run_id": ("agentflow.Run", "agent"),
    "session_id": ("agentflow.AgentSession", "agent"),
    "document_id": ("agentflow.KnowledgeDocument", "agent"),
    "request_id": ("hitl.HITLRequest", "run__agent"),
    "golden_path_id": ("learning.GoldenPath", "agent"),
    "playbook_id": ("learning.Playbook", "agent"),
}


# The agents a member may see in a tenant, or None when not restricted: governance's
# restrictions (``governance.services.visible_agents``), registered from its
# ``AppConfig.ready`` because governance sits above this base view.
AgentVisibility = Callable[[Any, int], "QuerySet[Any] | None"]
_agent_visibility: list[AgentVisibility] = []


def register_agent_visibility(visible_agents: AgentVisibility) -> None:
    """Set who may see which agents; call from ``AppConfig.ready``."""
    _agent_visibility[:] = [visible_agents]


def required_scope(view_class: type[APIView], method: str) -> str:
    """The scope ``method`` on ``view_class`` needs (unlisted methods need ``write``)."""
    scope_map: dict[str, str] = getattr(view_class, "scope_map", DEFAULT_SCOPE_MAP)
    return scope_map.get(method.upper(), WRITE)


def key_scopes(key: APIKey) -> frozenset[str]:
    return frozenset().union(*(KEY_SCOPES.get(scope, frozenset()) for scope in key.scopes))


def _next_minute() -> str:
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return now.isoformat().replace("+00:00", "Z")


class TenantScopedAPIView(APIView):
    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = []  # scope checks below replace them
    scope_map: ClassVar[dict[str, str]] = DEFAULT_SCOPE_MAP

    tenant: Tenant
    # The caller's role in the tenant: a Role value, PLATFORM_ADMIN, or None for API keys.
    role: str | None = None
    # Holds the request's tenant_scope from ``initial`` until ``dispatch`` returns.
    _scope: ExitStack | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        tenant, scopes, key, role = self._resolve_tenant(request)
        self.tenant = tenant
        self.role = role
        request.tenant = tenant  # type: ignore[attr-defined]
        self._scope = ExitStack()
        self._scope.enter_context(tenant_scope(tenant.pk))
        needed = required_scope(type(self), request.method or "GET")
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
        self._check_agent_bound(kwargs)

    def visible_agents(self) -> QuerySet[Any] | None:
        """The agents this caller may see, or None when not restricted (django-guardian).

        Filter lists with ``agent__in=...`` (``governance.services.restrict_to_visible_agents``).
        """
        if self.role is None or self.role == PLATFORM_ADMIN:
            return None
        if not hasattr(self, "_visible_agents"):
            if not _agent_visibility:  # fail closed: a restriction must never be skipped
                raise ImproperlyConfigured("No agent visibility (governance registers it).")
            self._visible_agents = _agent_visibility[0](self.request.user, self.tenant.pk)
        return self._visible_agents

    def _check_agent_bound(self, kwargs: dict[str, Any]) -> None:
        """404 for a path naming another agent's object when the caller is restricted:
        exactly what a missing object answers, so a restriction reveals nothing."""
        bound = [(name, kwargs[name]) for name in AGENT_BOUND_PARAMS if name in kwargs]
        if not bound:
            return
        visible = self.visible_agents()
        if visible is None:
            return
        for name, value in bound:
            label, path = AGENT_BOUND_PARAMS[name]
            try:
                model = apps.get_model(label)
            except LookupError:
                continue  # that app is not installed
            # One query: the object exists and its agent is not visible (a missing object is
            # left to the handler, whose 404 is the same).
            hidden = model._default_manager.filter(pk=value).exclude(
                **{f"{path}__in": visible.values("pk")}
            )
            if hidden.exists():
                raise Http404

    def _resolve_tenant(
        self, request: Request
    ) -> tuple[Tenant, frozenset[str], APIKey | None, str | None]:
        if isinstance(request.auth, APIKey):
            return request.auth.tenant, key_scopes(request.auth), request.auth, None
        user = request.user
        if not user or not user.is_authenticated:
            raise exceptions.NotAuthenticated()
        slug = request.headers.get(TENANT_HEADER)
        platform_admin = is_platform_admin(user)
        if platform_admin and slug:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise exceptions.NotFound(f"Send {TENANT_HEADER}: <tenant slug> to pick a tenant.")
            return tenant, PLATFORM_ADMIN_SCOPES, None, PLATFORM_ADMIN
        # Memberships are looked up for this user before any scope exists.
        memberships = Membership.unscoped.select_related("tenant").filter(user=user)
        if slug:
            memberships = memberships.filter(tenant__slug=slug)
        found = list(memberships[:2])
        if len(found) != 1:
            raise exceptions.NotFound(
                "No tenant membership."
                if not found and not platform_admin
                else f"Send {TENANT_HEADER}: <tenant slug> to pick a tenant."
            )
        membership = found[0]
        if membership.tenant.status != TenantStatus.ACTIVE:
            raise exceptions.PermissionDenied(f"Tenant is {membership.tenant.status}.")
        return membership.tenant, ROLE_SCOPES[membership.role], None, membership.role

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
            if self._scope is not None:
                self._scope.close()
                self._scope = None
