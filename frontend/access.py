"""Who the signed-in user is in the dashboard: current tenant, role, what they may see and do.

Every dashboard view derives from :class:`DashboardView`. Each request it

* requires a login (anonymous: redirect to ``/login/?next=...``);
* resolves the current tenant from the session, validated against the user's *active*
  memberships on every request (a suspended tenant, or a revoked membership, stops being
  selectable at once); platform admins (``tenants.roles.is_platform_admin``: staff
  users) may select any tenant that is not suspended;
* checks the page's ``page`` against :data:`PAGE_ROLES` (403 otherwise);
* runs the handler inside ``tenant_scope(current tenant)``, so every query of tenant data
  is scoped and a foreign id simply is not found (404, rendered as a page).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import Resolver404
from django.urls import resolve as resolve_url
from django.views import View

from governance.audit import Actor
from tenants.context import tenant_scope
from tenants.models import Membership, Tenant, TenantStatus
from tenants.roles import (
    ADMIN,
    PLATFORM_ADMIN,
    READ,
    REVIEW,
    WRITE,
    is_platform_admin,
    roles_with,
)

SESSION_TENANT = "frontend.tenant_id"
# Views of the one role table (tenants.roles), by what the roles may do.
ALL_ROLES = roles_with(READ)
MANAGERS = roles_with(WRITE)
REVIEWERS = roles_with(REVIEW)
ADMINS = roles_with(ADMIN)

# Which roles see which page (and its nav link): the scope the page's API asks for, so a
# page and its API never disagree (agents and the audit trail are ``read`` in the API, so
# reviewers read them here too). Tenants and keys are for those who manage them.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "overview": ALL_ROLES,
    "runs": ALL_ROLES,
    "hitl": ALL_ROLES,
    "agents": ALL_ROLES,
    "tenants": MANAGERS,
    "audit": ALL_ROLES,
    "learning": ALL_ROLES,
    "webhooks": ALL_ROLES,  # GET /webhooks/endpoints is `read`; changing them is `admin`
    "members": ALL_ROLES,  # GET /governance/roles is `read`; changes and invitations `admin`
    "activity": ALL_ROLES,  # GET /activity is `read`
    "graph": ALL_ROLES,  # GET /graph/... is `read`
    "rules": ALL_ROLES,  # GET /activity/rules is `read`; changing them is `write`
    # Policies and SLA settings: everyone reads; `write` (operators, owners) changes them.
    # Availability: reviewers set their own, `write` anyone's.
    "policies": ALL_ROLES,
    "sessions": ALL_ROLES,  # GET /sessions/{id} is `read`; taking over needs `review`
}
# Roles whose work is the review queue and nothing else they may change: they land there.
QUEUE_FIRST = REVIEWERS - MANAGERS
NAV: tuple[tuple[str, str, str], ...] = (
    ("overview", "Overview", "/"),
    ("runs", "Runs", "/runs/"),
    ("hitl", "Review queue", "/hitl/"),
    ("agents", "Agents", "/agents/"),
    ("tenants", "Tenants & keys", "/tenants/"),
    ("audit", "Audit trail", "/audit/"),
    ("learning", "Learning", "/learning/"),
    ("members", "Members", "/members/"),
    ("webhooks", "Webhooks", "/webhooks/"),
    ("activity", "Activity", "/activity/"),
    ("graph", "Journeys", "/graph/"),
    ("rules", "Rules", "/rules/"),
    ("policies", "Policies", "/policies/"),
)
# Pages that work without any tenant (a platform admin before the first tenant exists).
TENANTLESS_PAGES = frozenset({"tenants"})


@dataclass
class Access:
    """The signed-in user's standing in the current tenant, for views and templates."""

    user: Any
    tenant: Tenant | None
    role: str | None  # a Role value, PLATFORM_ADMIN, or None (no tenant at all)
    tenants: list[Tenant] = field(default_factory=list)  # what the selector offers
    roles: dict[int, str] = field(default_factory=dict)  # tenant id -> the user's role

    @property
    def is_platform_admin(self) -> bool:
        return is_platform_admin(self.user)

    @property
    def actor(self) -> Actor:
        return Actor("user", str(self.user.pk))

    def may_see(self, page: str) -> bool:
        return self.role is not None and self.role in PAGE_ROLES[page]

    @property
    def visible_pages(self) -> frozenset[str]:
        return frozenset(name for name in PAGE_ROLES if self.may_see(name))

    @property
    def can_manage(self) -> bool:
        """Create and change agents, knowledge and keys of the current tenant."""
        return self.role in MANAGERS

    @property
    def can_administer(self) -> bool:
        """Tenant administration (the API's ``admin`` scope): owners and platform admins."""
        return self.role in ADMINS

    @property
    def can_review(self) -> bool:
        return self.role in REVIEWERS

    @property
    def landing_page(self) -> str:
        """Where signing in leads when no ``next`` says otherwise."""
        return "/hitl/" if self.role in QUEUE_FIRST else "/"

    def nav(self) -> list[dict[str, str]]:
        return [
            {"name": name, "label": label, "url": url}
            for name, label, url in NAV
            if self.may_see(name) and _served(url)
        ]


@functools.cache
def _served(url: str) -> bool:
    """Whether a page is installed yet (/learning/ comes with the learning app's pages)."""
    try:
        resolve_url(url)
    except Resolver404:
        return False
    return True


def _memberships(user: Any) -> QuerySet[Membership]:
    # Before any tenant scope exists: the user's own memberships decide what it may select.
    return Membership.unscoped.select_related("tenant").filter(
        user_id=user.pk, tenant__status=TenantStatus.ACTIVE
    )


def resolve(request: HttpRequest) -> Access:
    """The user's selectable tenants and the current one (the session's, when still valid)."""
    user = request.user
    roles = {m.tenant_id: m.role for m in _memberships(user)}
    platform_admin = is_platform_admin(user)
    if platform_admin:
        tenants = list(Tenant.objects.exclude(status=TenantStatus.SUSPENDED).order_by("name"))
    else:
        tenants = sorted(
            (m.tenant for m in _memberships(user)), key=lambda t: (t.name.lower(), t.pk)
        )
    wanted = request.session.get(SESSION_TENANT)
    current = next((t for t in tenants if t.pk == wanted), tenants[0] if tenants else None)
    role: str | None = None
    if platform_admin:
        role = PLATFORM_ADMIN
    elif current is not None:
        role = roles[current.pk]
    return Access(user=user, tenant=current, role=role, tenants=tenants, roles=roles)


def select_tenant(request: HttpRequest, tenant_id: int) -> bool:
    """Make ``tenant_id`` current when the user may select it; False (and no change) if not."""
    if not any(t.pk == tenant_id for t in resolve(request).tenants):
        return False
    request.session[SESSION_TENANT] = tenant_id
    return True


class DashboardView(LoginRequiredMixin, View):
    """Base of every dashboard page: login, tenant, role check, tenant scope, HTML errors."""

    login_url = "/login/"
    page: ClassVar[str] = "overview"
    access: Access

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.access = resolve(request)
        try:
            if not self.access.may_see(self.page):
                if self.access.tenant is None and not self.access.is_platform_admin:
                    return self.render_page(
                        request, "frontend/no_tenant.html", {"title": "No tenant"}, status=403
                    )
                raise PermissionDenied
            if self.access.tenant is None:
                if self.page not in TENANTLESS_PAGES:
                    return self.render_page(
                        request, "frontend/no_tenant.html", {"title": "No tenant"}, status=200
                    )
                return super().dispatch(request, *args, **kwargs)
            with tenant_scope(self.access.tenant.pk):
                return super().dispatch(request, *args, **kwargs)
        except Http404:
            return self.render_page(request, "frontend/error.html", {"title": "Not found"}, 404)
        except PermissionDenied:
            return self.render_page(request, "frontend/error.html", {"title": "Forbidden"}, 403)

    def require(self, allowed: bool) -> None:
        """Refuse an action the user's role does not allow (403 page)."""
        if not allowed:
            raise PermissionDenied

    def render_page(
        self,
        request: HttpRequest,
        template: str,
        context: dict[str, Any] | None = None,
        status: int = 200,
    ) -> HttpResponse:
        base = {"access": self.access, "page": self.page, "live_events": self.live_events()}
        return render(request, template, {**base, **(context or {})}, status=status)

    def live_events(self) -> Iterable[str]:
        """The live event types this page handles (the JS registry says how)."""
        return ()
