"""Who may do what: key scopes, session roles, tenant selection, key bookkeeping, correlation.

Permissions are data (ARCHITECTURE habit 3): GET needs the ``read`` scope, writes need
``write``; a key carries its scopes, a signed-in user gets the scopes of their role in the
tenant picked by ``X-Tenant`` (SPEC 5 and 7).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from agentflow.models import Agent, Run
from governance.models import AuditEvent
from tenants import services
from tenants.models import APIKey, Role
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona, make_agent
from tests.platform.api.test_bad_input import assert_error, lenient, nothing_written

RUN = {"user_id": "u", "message": "How do I reset my password?"}
ASYNC = {"Prefer": "respond-async"}


def _user(username: str, **extra: Any) -> User:
    user: User = get_user_model().objects.create_user(username, **extra)
    return user


def _session(user: User, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks, raise_request_exception=False)
    client.force_login(user)
    return client


def _post_run(client: Client, agent: Agent, **headers: str) -> Any:
    return client.post(
        f"/api/v1/agents/{agent.pk}/runs",
        RUN,
        content_type="application/json",
        headers={**ASYNC, **headers},
    )


def _agent_names(response: Any) -> set[str]:
    assert response.status_code == 200, response.content[:300]
    return {agent["name"] for agent in response.json()["results"]}


# --- API key scopes ----------------------------------------------------------------------


def test_a_read_only_key_can_read_but_not_write(owner: Persona, agent: Agent) -> None:
    """A key with scopes ["read"]: every GET works; POST, PATCH and DELETE are 403 naming
    the missing 'write' scope, and change nothing."""
    issued = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="ro", scopes=["read"])
    reader = lenient(replace(owner, key=issued.plaintext))
    for path in ("/api/v1/agents", f"/api/v1/agents/{agent.pk}", "/api/v1/runs", "/api/v1/usage"):
        assert reader.get(path).status_code == 200, path
    with nothing_written(owner.tenant):
        refused = [
            reader.post(f"/api/v1/agents/{agent.pk}/runs", RUN, headers=ASYNC),
            reader.post(
                "/api/v1/agents",
                {"name": "n", "blueprint": "support_agent", "config": SUPPORT_CONFIG},
            ),
            reader.patch(f"/api/v1/agents/{agent.pk}", {"name": "renamed"}),
            reader.delete(f"/api/v1/agents/{agent.pk}"),
        ]
        for response in refused:
            body = assert_error(response, 403, "permission_denied")
            assert "'write'" in body["detail"]


def test_a_write_only_key_cannot_read(owner: Persona, agent: Agent) -> None:
    """A key with scopes ["write"] may start a run but not list runs (GET needs 'read')."""
    issued = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="wo", scopes=["write"])
    writer = lenient(replace(owner, key=issued.plaintext))
    assert writer.post(f"/api/v1/agents/{agent.pk}/runs", RUN, headers=ASYNC).status_code == 202
    body = assert_error(writer.get("/api/v1/runs"), 403, "permission_denied")
    assert "'read'" in body["detail"]


# --- session users and their roles ---------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "may_write"),
    [(Role.VIEWER, False), (Role.REVIEWER, False), (Role.OPERATOR, True), (Role.OWNER, True)],
)
def test_session_roles_decide_reads_and_writes(
    owner: Persona, agent: Agent, role: str, may_write: bool
) -> None:
    """A signed-in member of each role reads agents and runs; only operators and owners
    start runs, create, rename and delete agents; the others get 403 and change nothing."""
    user = _user(f"{role}-user")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=role)
    client = _session(user)
    assert _agent_names(client.get("/api/v1/agents")) == {"support"}
    assert client.get("/api/v1/runs").status_code == 200

    def writes() -> list[Any]:
        created = {"name": f"by-{role}", "blueprint": "support_agent", "config": SUPPORT_CONFIG}
        return [
            _post_run(client, agent),
            client.post("/api/v1/agents", created, content_type="application/json"),
            client.patch(
                f"/api/v1/agents/{agent.pk}", {"name": f"renamed-{role}"}, "application/json"
            ),
        ]

    if may_write:
        assert [r.status_code for r in writes()] == [202, 201, 200]
        assert client.delete(f"/api/v1/agents/{agent.pk}").status_code == 204
        return
    with nothing_written(owner.tenant):
        responses = [*writes(), client.delete(f"/api/v1/agents/{agent.pk}")]
        for response in responses:
            assert "'write'" in assert_error(response, 403, "permission_denied")["detail"]


def test_a_member_of_a_suspended_tenant_is_refused(owner: Persona) -> None:
    """A signed-in operator of a suspended tenant: 403 saying so, for reads too."""
    user = _user("operator")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=Role.OPERATOR)
    services.set_status(actor=ACTOR, tenant=owner.tenant, status="suspended")
    body = assert_error(_session(user).get("/api/v1/agents"), 403, "permission_denied")
    assert "suspended" in body["detail"]


def test_a_signed_in_user_without_membership_is_404(owner: Persona) -> None:
    """A signed-in user who belongs to no tenant, with and without X-Tenant."""
    client = _session(_user("nobody"))
    for headers in ({}, {"X-Tenant": owner.tenant.slug}):
        body = assert_error(client.get("/api/v1/agents", headers=headers), 404, "not_found")
        assert body["detail"] == "No tenant membership."


# --- X-Tenant -------------------------------------------------------------------------------


def test_x_tenant_picks_among_a_users_memberships(owner: Persona, outsider: Persona) -> None:
    """A viewer of Acme who operates Globex: without X-Tenant a 404 asking for it; with it,
    each tenant's own agents and that tenant's role (no run in Acme, a run in Globex); a
    slug they do not belong to and an unknown slug are 404."""
    acme_agent = make_agent(owner, name="acme-bot")
    globex_agent = make_agent(outsider, name="globex-bot")
    user = _user("consultant")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=Role.VIEWER)
    services.add_member(actor=ACTOR, tenant=outsider.tenant, user=user, role=Role.OPERATOR)
    third = services.create_tenant(actor=ACTOR, name="Initech")
    client = _session(user)
    acme, globex = {"X-Tenant": owner.tenant.slug}, {"X-Tenant": outsider.tenant.slug}

    ambiguous = assert_error(client.get("/api/v1/agents"), 404, "not_found")
    assert "X-Tenant" in ambiguous["detail"]
    assert _agent_names(client.get("/api/v1/agents", headers=acme)) == {"acme-bot"}
    assert _agent_names(client.get("/api/v1/agents", headers=globex)) == {"globex-bot"}
    with nothing_written(owner.tenant):
        assert_error(_post_run(client, acme_agent, **acme), 403, "permission_denied")
        # Globex's agent named while Acme is selected: not found, not "forbidden".
        assert_error(client.get(f"/api/v1/agents/{globex_agent.pk}", headers=acme), 404)
    created = _post_run(client, globex_agent, **globex)
    assert created.status_code == 202
    assert Run.unscoped.get(pk=created.json()["id"]).tenant_id == outsider.tenant.pk
    for slug in (third.slug, "no-such-tenant"):
        response = client.get("/api/v1/agents", headers={"X-Tenant": slug})
        assert assert_error(response, 404, "not_found")["detail"] == "No tenant membership."


def test_a_single_membership_needs_no_x_tenant(owner: Persona, agent: Agent) -> None:
    """A user in one tenant: no header needed; naming another tenant is a 404."""
    user = _user("solo")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=Role.OPERATOR)
    other = services.create_tenant(actor=ACTOR, name="Elsewhere")
    client = _session(user)
    assert _agent_names(client.get("/api/v1/agents")) == {"support"}
    assert_error(client.get("/api/v1/agents", headers={"X-Tenant": other.slug}), 404)


def test_a_superuser_must_pick_a_tenant_with_x_tenant(owner: Persona, outsider: Persona) -> None:
    """A superuser (no memberships): 404 asking for X-Tenant without it and for an unknown
    slug; with it, that tenant's data and owner rights there (a run lands in it)."""
    acme_agent = make_agent(owner, name="acme-bot")
    make_agent(outsider, name="globex-bot")
    root = get_user_model().objects.create_superuser("root", "root@example.com", None)
    client = _session(root)
    for headers in ({}, {"X-Tenant": "no-such-tenant"}):
        body = assert_error(client.get("/api/v1/agents", headers=headers), 404, "not_found")
        assert "X-Tenant" in body["detail"]
    acme = {"X-Tenant": owner.tenant.slug}
    assert _agent_names(client.get("/api/v1/agents", headers=acme)) == {"acme-bot"}
    assert _agent_names(
        client.get("/api/v1/agents", headers={"X-Tenant": outsider.tenant.slug})
    ) == {"globex-bot"}
    created = _post_run(client, acme_agent, **acme)
    assert created.status_code == 202
    assert Run.unscoped.get(pk=created.json()["id"]).tenant_id == owner.tenant.pk


# --- CSRF ------------------------------------------------------------------------------------


def test_session_writes_need_a_csrf_token_and_key_writes_do_not(
    owner: Persona, agent: Agent
) -> None:
    """With CSRF checks on: a signed-in operator's POST without a token is 403 and writes
    nothing; with the cookie and X-CSRFToken it is accepted; an API key needs no token."""
    user = _user("operator")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=Role.OPERATOR)
    client = _session(user, enforce_csrf_checks=True)
    with nothing_written(owner.tenant):
        refused = _post_run(client, agent)
        assert "CSRF" in assert_error(refused, 403, "permission_denied")["detail"]
    token = secrets.token_hex(16)  # an unmasked 32-character secret
    client.cookies["csrftoken"] = token
    assert _post_run(client, agent, **{"X-CSRFToken": token}).status_code == 202
    keyed = Client(enforce_csrf_checks=True)
    assert _post_run(keyed, agent, Authorization=f"Bearer {owner.key}").status_code == 202


# --- key bookkeeping ----------------------------------------------------------------------------


def _last_used(key: APIKey) -> datetime | None:
    return APIKey.unscoped.get(pk=key.pk).last_used_at


def test_last_used_at_is_recorded_at_most_once_a_minute(owner: Persona) -> None:
    """A fresh key has no last_used_at; the first request sets it to now; requests within
    the next minute leave it alone; one after the minute moves it again; a request with
    the right prefix but the wrong secret does not touch it."""
    issued = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="tracked")
    persona = replace(owner, key=issued.plaintext)
    assert _last_used(issued.key) is None
    before = datetime.now(UTC)
    assert persona.get("/api/v1/usage").status_code == 200
    first = _last_used(issued.key)
    assert first is not None
    assert before <= first <= datetime.now(UTC)
    assert persona.get("/api/v1/usage").status_code == 200
    assert _last_used(issued.key) == first

    stale = datetime.now(UTC) - timedelta(minutes=5)
    APIKey.unscoped.filter(pk=issued.key.pk).update(last_used_at=stale)
    forged = replace(owner, key=f"af_{issued.key.prefix}_{'x' * 43}")
    assert_error(lenient(forged).get("/api/v1/usage"), 401, "authentication_failed")
    assert _last_used(issued.key) == stale
    assert persona.get("/api/v1/usage").status_code == 200
    moved = _last_used(issued.key)
    assert moved is not None
    assert moved > stale + timedelta(minutes=4)


# --- correlation ids ---------------------------------------------------------------------------


Send = Callable[[dict[str, str]], Any]


def _error_cases(owner: Persona, agent: Agent) -> dict[str, tuple[int, Send]]:
    """One request per kind of error: the status it must get and how to send it."""
    reader = lenient(
        replace(
            owner,
            key=services.issue_key(actor=ACTOR, tenant=owner.tenant, scopes=["read"]).plaintext,
        )
    )
    api = lenient(owner)
    anonymous = Client(raise_request_exception=False)
    runs = f"/api/v1/agents/{agent.pk}/runs"
    auth = {"Authorization": f"Bearer {owner.key}"}
    return {
        "400-malformed": (400, lambda h: api.post(runs, "{", headers=h)),
        "401-no-credentials": (401, lambda h: anonymous.get("/api/v1/agents", headers=h)),
        "403-scope": (403, lambda h: reader.post(runs, RUN, headers=h)),
        "404-object": (404, lambda h: api.get(f"/api/v1/runs/{agent.pk}", headers=h)),
        "404-no-route": (404, lambda h: api.get("/api/v1/no-such-thing", headers=h)),
        "405-method": (405, lambda h: api.client.put(runs, headers={**auth, **h})),
        "415-media-type": (
            415,
            lambda h: api.post(runs, "x", content_type="text/plain", headers=h),
        ),
        "422-validation": (422, lambda h: api.post(runs, {"user_id": "u"}, headers=h)),
    }


def test_the_correlation_id_is_echoed_on_every_error(owner: Persona, agent: Agent) -> None:
    """400, 401, 403, 404 (object and unrouted path), 405, 415 and 422, each sent with an
    X-Correlation-ID: the response header and the body's correlation_id both echo it."""
    for kind, (status, send) in _error_cases(owner, agent).items():
        correlation_id = f"client-{kind}"
        response = send({"X-Correlation-ID": correlation_id})
        body = assert_error(response, status)
        assert response["X-Correlation-ID"] == correlation_id, kind
        assert body["correlation_id"] == correlation_id, kind


def test_a_rate_limited_answer_echoes_the_correlation_id(owner: Persona) -> None:
    """A 429 (requests_per_minute = 0) sent with an X-Correlation-ID."""
    services.update_quotas(
        actor=ACTOR, tenant=owner.tenant, tier=None, overrides={"requests_per_minute": 0}
    )
    response = lenient(owner).get("/api/v1/agents", headers={"X-Correlation-ID": "client-429"})
    assert assert_error(response, 429, "quota_exceeded")["correlation_id"] == "client-429"
    assert response["X-Correlation-ID"] == "client-429"


@pytest.mark.parametrize(
    "unsafe",
    ["has spaces", "x" * 129, "semi;colon", "new\\nline"],
    ids=["space", "long", "semicolon", "escape"],
)
def test_an_unsafe_correlation_id_is_replaced_consistently(owner: Persona, unsafe: str) -> None:
    """Correlation ids that are unsafe to log or echo (spaces, 129 characters, ';', '\\'):
    replaced by a minted one that header and body agree on."""
    response = lenient(owner).get(
        f"/api/v1/agents/{uuid.uuid4()}", headers={"X-Correlation-ID": unsafe}
    )
    body = assert_error(response, 404)
    assert response["X-Correlation-ID"] != unsafe
    assert body["correlation_id"] == response["X-Correlation-ID"]


def test_the_correlation_id_reaches_the_run_and_its_audit_event(
    owner: Persona, agent: Agent
) -> None:
    """A run started with X-Correlation-ID: the run row and its run.created audit event
    carry it, and so does the 202."""
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs", RUN, headers={**ASYNC, "X-Correlation-ID": "trace-77"}
    )
    assert response.status_code == 202
    assert response["X-Correlation-ID"] == "trace-77"
    run_id = response.json()["id"]
    assert Run.unscoped.get(pk=run_id).correlation_id == "trace-77"
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="run.created", target_id=run_id)
    assert event.correlation_id == "trace-77"


def test_tenant_administration_needs_the_admin_key_scope(owner: Persona) -> None:
    """A read+write integration key cannot grant roles or export; an admin key can."""
    integration = services.issue_key(
        actor=ACTOR, tenant=owner.tenant, name="integration", scopes=["read", "write"]
    )
    headers = {"Authorization": f"Bearer {integration.plaintext}"}
    client = Client()
    for method, path in (
        ("get", "/api/v1/governance/export"),
        ("post", "/api/v1/governance/roles"),
    ):
        response = getattr(client, method)(
            path,
            {"username": "nobody", "role": "viewer"} if method == "post" else None,
            content_type="application/json",
            headers=headers,
        )
        assert response.status_code == 403, (path, response.status_code)
    admin = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="admin", scopes=["admin"])
    allowed = Client().get(
        "/api/v1/governance/export", headers={"Authorization": f"Bearer {admin.plaintext}"}
    )
    assert allowed.status_code == 200
