"""Every role against every /api/v1 endpoint and method: allowed or refused, as the data says.

Generated from the URL conf and each view's ``scope_map`` (ARCHITECTURE habit 3), so an
endpoint added later is covered without anyone listing it: the expected answer comes from
``required_scope`` and the role's (or key's) scopes, the actual one from calling it. Paths
use ids that exist nowhere, so an allowed call reaches the handler and answers 404 (or
does its work, for collections) while a refused one stops at the permission check with
403; refused calls change nothing. ``POLICY`` pins the product decisions themselves, so
a scope map edited by mistake fails here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import get_resolver

from tenants import services
from tenants.models import Role, Tenant
from tenants.views_base import (
    KEY_SCOPES,
    PLATFORM_ADMIN_SCOPES,
    ROLE_SCOPES,
    TenantScopedAPIView,
    key_scopes,
    required_scope,
)
from tests.platform.api.conftest import ACTOR, make_persona
from tests.platform.api.test_bad_input import assert_error, nothing_written
from tests.platform.api.test_outsiders import (
    API_PREFIX,
    BODIES,
    BODY_METHODS,
    ENDPOINTS,
    PLATFORM_PREFIX,
    Endpoint,
    _missing_ids,
    _walk,
)

PERSONAS = (
    "platform_admin",
    "owner",
    "operator",
    "reviewer",
    "viewer",
    "key_read",
    "key_write",
    "key_read_write",
    "key_admin",
    "key_full",
)
KEY_PERSONAS = {
    "key_read": ["read"],
    "key_write": ["write"],
    "key_read_write": ["read", "write"],
    "key_admin": ["admin"],
    "key_full": ["read", "write", "admin"],
}


def _scopes(persona: str) -> frozenset[str]:
    if persona == "platform_admin":
        return PLATFORM_ADMIN_SCOPES
    if persona in KEY_PERSONAS:
        return frozenset().union(*(KEY_SCOPES[s] for s in KEY_PERSONAS[persona]))
    return ROLE_SCOPES[persona]


def _view_classes() -> dict[str, type[Any]]:
    return {
        route: pattern.callback.view_class  # type: ignore[attr-defined]
        for route, pattern in _walk(get_resolver())
        if route.startswith(API_PREFIX)
    }


VIEWS = _view_classes()


def signed_by_the_request(endpoint: Endpoint) -> bool:
    """Views that take no credentials at all (webhook deliveries prove themselves by a
    signature): no role or key grants anything there, so the matrix has nothing to say."""
    view = VIEWS[endpoint.route]
    return not issubclass(view, TenantScopedAPIView) and not getattr(
        view, "authentication_classes", True
    )


def acts_as_a_person(endpoint: Endpoint) -> bool:
    """Views where a signed-in person acts for themselves, in no tenant yet (accepting an
    invitation): every session may call them, no tenant's key (a key is nobody)."""
    return bool(getattr(VIEWS[endpoint.route], "acts_as_the_signed_in_person", False))


def expected_allowed(endpoint: Endpoint, persona: str) -> bool:
    view = VIEWS[endpoint.route]
    if acts_as_a_person(endpoint):
        return persona not in KEY_PERSONAS
    if endpoint.is_platform:
        return persona == "platform_admin"  # staff sessions only (IsAdminUser)
    assert issubclass(view, TenantScopedAPIView), f"{endpoint}: not a tenant-scoped view"
    return required_scope(view, endpoint.method) in _scopes(persona)


GOVERNED = [e for e in ENDPOINTS if not signed_by_the_request(e)]


def test_every_api_view_is_governed_by_scopes_staff_or_a_signature() -> None:
    """A view that authenticates keys or sessions must declare scopes (a tenant-scoped
    view) or be platform administration; anything else would escape the matrix."""
    for endpoint in ENDPOINTS:
        view = VIEWS[endpoint.route]
        if endpoint.is_platform:
            assert not issubclass(view, TenantScopedAPIView), str(endpoint)
            continue
        assert (
            issubclass(view, TenantScopedAPIView)
            or signed_by_the_request(endpoint)
            or acts_as_a_person(endpoint)
        ), f"{endpoint}: authenticates callers but declares no scope_map"


# Product decisions, written out: who may call these (the matrix derives the rest).
READERS = {
    "platform_admin",
    "owner",
    "operator",
    "reviewer",
    "viewer",
    "key_read",
    "key_read_write",
    "key_full",
}
WRITERS = {"platform_admin", "owner", "operator", "key_write", "key_read_write", "key_full"}
# Tenant administration: owners, and only keys issued with the "admin" scope.
ADMINS = {"platform_admin", "owner", "key_admin", "key_full"}
POLICY: dict[str, set[str]] = {
    "GET /api/v1/agents": READERS,
    "POST /api/v1/agents": WRITERS,
    "DELETE /api/v1/agents/<uuid:agent_id>": WRITERS,
    "POST /api/v1/agents/<uuid:agent_id>/runs": WRITERS,
    "GET /api/v1/governance/audit": READERS,
    "GET /api/v1/governance/audit/verify": READERS,
    "GET /api/v1/governance/roles": READERS,
    "POST /api/v1/governance/roles": ADMINS,
    "GET /api/v1/governance/export": ADMINS,
    "POST /api/v1/governance/erasures": ADMINS,
    "GET /api/v1/governance/agents/<uuid:agent_id>/tool-permissions": READERS,
    "PUT /api/v1/governance/agents/<uuid:agent_id>/tool-permissions": ADMINS,
    "GET /api/v1/tenants": {"platform_admin"},
    "POST /api/v1/tenants/<int:tenant_id>/keys": {"platform_admin"},
}


def test_the_policy_is_what_the_scope_maps_say() -> None:
    by_name = {str(e): e for e in ENDPOINTS}
    assert POLICY.keys() <= by_name.keys(), POLICY.keys() - by_name.keys()
    for name, allowed in POLICY.items():
        assert not signed_by_the_request(by_name[name]), name
        derived = {p for p in PERSONAS if expected_allowed(by_name[name], p)}
        assert derived == allowed, (name, sorted(derived ^ allowed))


def test_roles_scale_up_and_keys_never_administer_the_platform() -> None:
    """Each role can do at least what the role below it can; no API key reaches the
    platform endpoints; a key with both scopes can do what each of them can."""
    ladder = ["viewer", "reviewer", "operator", "owner", "platform_admin"]
    for endpoint in GOVERNED:
        allowed = [expected_allowed(endpoint, p) for p in ladder]
        assert allowed == sorted(allowed), (str(endpoint), allowed)
        if endpoint.is_platform:
            assert not any(expected_allowed(endpoint, k) for k in KEY_PERSONAS)
        if expected_allowed(endpoint, "key_read") or expected_allowed(endpoint, "key_write"):
            assert expected_allowed(endpoint, "key_read_write"), str(endpoint)


@dataclass
class Caller:
    client: Client
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def callers(db: None) -> tuple[Tenant, dict[str, Caller]]:
    persona = make_persona("Acme", tier="professional")
    tenant = persona.tenant
    # No request-rate limit: the matrix sends hundreds of requests within a minute.
    services.update_quotas(
        actor=ACTOR,
        tenant=tenant,
        tier=None,
        overrides={"requests_per_minute": None, "requests_per_minute_per_key": None},
    )
    users = get_user_model().objects
    found: dict[str, Caller] = {}
    staff = users.create_user("matrix-staff", is_staff=True)
    found["platform_admin"] = Caller(_signed_in(staff), {"X-Tenant": tenant.slug})
    for role in (Role.OWNER, Role.OPERATOR, Role.REVIEWER, Role.VIEWER):
        user = users.create_user(f"matrix-{role}")
        services.add_member(actor=ACTOR, tenant=tenant, user=user, role=role)
        found[str(role)] = Caller(_signed_in(user))
    for name, scopes in KEY_PERSONAS.items():
        issued = services.issue_key(actor=ACTOR, tenant=tenant, name=name, scopes=scopes)
        assert key_scopes(issued.key) == _scopes(name)
        found[name] = Caller(
            Client(raise_request_exception=False),
            {"Authorization": f"Bearer {issued.plaintext}"},
        )
    return tenant, found


def _signed_in(user: Any) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _call(caller: Caller, endpoint: Endpoint) -> Any:
    body = BODIES.get((endpoint.name, endpoint.method)) if endpoint.method in BODY_METHODS else None
    return caller.client.generic(
        endpoint.method,
        endpoint.path(_missing_ids(endpoint)),
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers={"Prefer": "respond-async", **caller.headers},
    )


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_endpoint_allows_and_refuses_as_the_scope_maps_say(
    persona: str, callers: tuple[Tenant, dict[str, Caller]]
) -> None:
    tenant, found = callers
    caller = found[persona]
    wrong: list[str] = []
    for endpoint in GOVERNED:
        allowed = expected_allowed(endpoint, persona)
        if allowed:
            response = _call(caller, endpoint)
            if response.status_code in (401, 403) or response.status_code >= 500:
                wrong.append(f"{endpoint}: expected allowed, got {response.status_code}")
            continue
        with nothing_written(tenant):
            response = _call(caller, endpoint)
        if response.status_code != 403:
            wrong.append(f"{endpoint}: expected 403, got {response.status_code}")
        elif endpoint.method != "HEAD":
            body = assert_error(response, 403)
            needed = (
                None
                if endpoint.is_platform or acts_as_a_person(endpoint)
                else required_scope(VIEWS[endpoint.route], endpoint.method)
            )
            if needed is not None and f"'{needed}'" not in body["detail"]:
                wrong.append(f"{endpoint}: 403 does not name the {needed!r} scope")
    assert not wrong, f"{persona}:\n" + "\n".join(wrong)


def test_the_matrix_covers_every_endpoint_and_both_outcomes() -> None:
    """Not vacuous: dozens of endpoints, and each persona both allowed and refused some."""
    assert len(GOVERNED) >= 50
    assert any(e.route.startswith("api/v1/governance/") for e in GOVERNED)
    assert any(e.route.startswith(PLATFORM_PREFIX) for e in GOVERNED)
    assert all(expected_allowed(e, "platform_admin") for e in GOVERNED)
    for persona in PERSONAS[1:]:
        assert {expected_allowed(e, persona) for e in GOVERNED} == {True, False}, persona
