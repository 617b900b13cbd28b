"""Sign-in, CSRF, the current tenant, and which role sees which page (frontend/access.py)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from agentflow.models import Agent
from frontend.access import _served
from hitl import services as hitl_services
from tenants import services as tenant_services
from tenants.models import TenantStatus
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.frontend.conftest import PASSWORD, User_, make_user, member, signed_in
from tests.platform.hitl.conftest import escalated_run, review_of

PAGES = ["/", "/runs/", "/hitl/", "/agents/", "/tenants/", "/audit/"]
NAV = re.compile(rb'data-nav="(\w+)"')


def nav_of(response: object) -> set[str]:
    return {m.decode() for m in NAV.findall(response.content)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", [*PAGES, "/runs/?fragment=rows", "/hitl/?fragment=rows"])
def test_every_page_needs_a_login(db: None, path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_and_logout(acme: Persona) -> None:
    user = make_user("lena")
    tenant_services.add_member(actor=ACTOR, tenant=acme.tenant, user=user, role="operator")
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    for selector in (b'name="username"', b'name="password"', b'type="submit"'):
        assert selector in page.content

    wrong = client.post("/login/", {"username": "lena", "password": "nope"})
    assert wrong.status_code == 200
    assert b'data-testid="login-error"' in wrong.content
    assert client.get("/").status_code == 302

    signed = client.post("/login/?next=/runs/", {"username": "lena", "password": PASSWORD})
    assert signed.status_code == 302
    assert signed["Location"] == "/runs/"
    home = client.get("/")
    assert home.status_code == 200
    assert b'data-testid="logout"' in home.content
    assert b'data-live-status="connecting"' in home.content

    assert client.get("/logout/").status_code == 405  # a link cannot sign anyone out
    assert client.get("/").status_code == 200
    out = client.post("/logout/")
    assert out.status_code == 302
    assert out["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_login_refuses_an_open_redirect(acme: Persona) -> None:
    make_user("lena")
    response = Client().post(
        "/login/?next=https://evil.example/", {"username": "lena", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_csrf_is_enforced_on_every_form(acme: Persona, agent: Agent) -> None:
    user = make_user("casey")
    tenant_services.add_member(actor=ACTOR, tenant=acme.tenant, user=user, role="owner")
    client = Client(enforce_csrf_checks=True)
    # The login form itself: without the token it is refused, with it it works.
    assert client.post("/login/", {"username": "casey", "password": PASSWORD}).status_code == 403
    token = client.get("/login/").cookies["csrftoken"].value
    signed = client.post(
        "/login/", {"username": "casey", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert signed.status_code == 302
    # Signing in made the owner available (issue 19); away, the request below waits
    # unassigned for the claim this test makes.
    hitl_services.set_availability(
        actor=ACTOR, tenant_id=acme.tenant.pk, user_id=user.pk, available=False
    )
    run = escalated_run(agent)
    request_id = review_of(run).pk
    posts = [
        ("/logout/", {}),
        ("/tenant/select/", {"tenant_id": acme.tenant.pk}),
        (f"/hitl/{request_id}/", {"action": "claim"}),
        ("/agents/", {"name": "x", "blueprint": "support_agent", "config": ""}),
        (f"/tenants/{acme.tenant.pk}/", {"action": "create_key", "name": "k", "scopes": "read"}),
    ]
    for path, data in posts:
        assert client.post(path, data).status_code == 403, path
    assert review_of(run).status == "pending"  # nothing was claimed
    assert Agent.unscoped.filter(tenant=acme.tenant).count() == 1
    # The same POST with the token goes through.
    page = client.get(f"/hitl/{request_id}/")
    token = page.cookies.get("csrftoken", client.cookies["csrftoken"]).value
    claimed = client.post(f"/hitl/{request_id}/", {"action": "claim", "csrfmiddlewaretoken": token})
    assert claimed.status_code == 302
    assert review_of(run).status == "assigned"


READERS = {"overview", "runs", "hitl", "agents", "audit", "learning", "webhooks", "members"}
READERS |= {"activity", "graph", "rules", "policies"}  # issue 19: integrations and policies
EXPECTED_NAV = {
    "owner": READERS | {"tenants"},
    "operator": READERS | {"tenants"},
    # Agents, the audit trail and webhooks are `read` in the API: reviewers read them too.
    "reviewer": READERS,
    "viewer": READERS,
}
PAGE_OF = {
    "/": "overview",
    "/runs/": "runs",
    "/hitl/": "hitl",
    "/agents/": "agents",
    "/tenants/": "tenants",
    "/audit/": "audit",
    "/webhooks/": "webhooks",
    "/members/": "members",
    "/activity/": "activity",
    "/graph/": "graph",
    "/rules/": "rules",
    "/policies/": "policies",
}


@pytest.mark.parametrize("role", sorted(EXPECTED_NAV))
def test_each_role_sees_its_pages_and_no_others(acme: Persona, agent: Agent, role: str) -> None:
    user = member(acme.tenant, f"m-{role}", role)
    home = user.get("/")
    assert home.status_code == 200
    # /learning/ is linked once the learning pages are installed.
    unserved = set() if _served("/learning/") else {"learning"}
    assert nav_of(home) == EXPECTED_NAV[role] - unserved
    assert f'data-testid="role">{role}<'.encode() in home.content
    for path, page in PAGE_OF.items():
        response = user.get(path)
        expected = 200 if page in EXPECTED_NAV[role] else 403
        assert response.status_code == expected, (role, path)
    detail = user.get(f"/agents/{agent.pk}/")
    assert detail.status_code == (200 if "agents" in EXPECTED_NAV[role] else 403)


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_viewers_read_but_change_nothing(acme: Persona, agent: Agent, viewer: User_) -> None:
    run = escalated_run(agent)
    request_id = review_of(run).pk
    page = viewer.get(f"/hitl/{request_id}/")
    assert page.status_code == 200
    assert b"data-action=" not in page.content  # no buttons
    assert viewer.post(f"/hitl/{request_id}/", {"action": "claim"}).status_code == 403
    detail = viewer.get(f"/agents/{agent.pk}/")
    assert b'data-testid="agent-config"' in detail.content
    assert b'data-testid="agent-config-form"' not in detail.content
    assert viewer.post(f"/agents/{agent.pk}/", {"name": "x", "config": "{}"}).status_code == 403
    assert viewer.post("/agents/", {"name": "y", "blueprint": "support_agent"}).status_code == 403
    assert review_of(run).status == "pending"
    agent.refresh_from_db()
    assert agent.name == "support"
    assert agent.version == 1


def test_only_platform_admins_create_or_suspend_tenants(
    acme: Persona, owner: User_, admin: User_
) -> None:
    listing = owner.get("/tenants/")
    assert b'data-testid="tenant-create-form"' not in listing.content
    assert owner.post("/tenants/", {"name": "Owned Inc", "tier": "free"}).status_code == 403
    own = owner.get(f"/tenants/{acme.tenant.pk}/")
    assert own.status_code == 200
    assert b'data-action="suspend"' not in own.content
    assert owner.post(f"/tenants/{acme.tenant.pk}/", {"action": "suspend"}).status_code == 403
    acme.tenant.refresh_from_db()
    assert acme.tenant.status == TenantStatus.ACTIVE

    created = admin.post("/tenants/", {"name": "Initech", "tier": "starter"})
    assert created.status_code == 302
    initech = created["Location"]
    assert b"Initech" in admin.get(initech).content
    assert admin.post(f"/tenants/{acme.tenant.pk}/", {"action": "suspend"}).status_code == 302
    acme.tenant.refresh_from_db()
    assert acme.tenant.status == TenantStatus.SUSPENDED
    # The suspended tenant's members lose the dashboard at once (not selectable any more).
    assert owner.get("/runs/").status_code == 403
    assert b'data-testid="no-tenant"' in owner.get("/").content
    assert admin.post(f"/tenants/{acme.tenant.pk}/", {"action": "activate"}).status_code == 302
    assert owner.get("/runs/").status_code == 200


def test_the_current_tenant_comes_from_the_session_and_is_validated(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent
) -> None:
    user = make_user("dual")
    tenant_services.add_member(actor=ACTOR, tenant=acme.tenant, user=user, role="operator")
    tenant_services.add_member(actor=ACTOR, tenant=globex.tenant, user=user, role="viewer")
    dual = signed_in(user)
    # Default: the first active membership by name (Acme); its agent shows, Globex's does not.
    page = dual.get("/agents/")
    assert str(agent.pk).encode() in page.content
    assert str(foreign_agent.pk).encode() not in page.content
    assert dual.get(f"/agents/{foreign_agent.pk}/").status_code == 404

    switched = dual.post("/tenant/select/", {"tenant_id": globex.tenant.pk, "next": "/agents/"})
    assert switched.status_code == 302
    assert switched["Location"] == "/agents/"
    page = dual.get("/agents/")
    assert str(foreign_agent.pk).encode() in page.content
    assert str(agent.pk).encode() not in page.content
    assert b'data-testid="role">viewer<' in page.content

    # A tenant the user is not in, garbage, and a suspended one: refused, nothing changes.
    stranger = tenant_services.create_tenant(actor=ACTOR, name="Stranger")
    for bad in (str(stranger.pk), "abc", "99999999"):
        dual.post("/tenant/select/", {"tenant_id": bad})
        assert str(foreign_agent.pk).encode() in dual.get("/agents/").content
    tenant_services.set_status(actor=ACTOR, tenant=globex.tenant, status="suspended")
    # The session still names Globex, but it is no longer selectable: back to Acme.
    assert str(agent.pk).encode() in dual.get("/agents/").content
    assert dual.post("/tenant/select/", {"tenant_id": globex.tenant.pk}).status_code == 302
    assert str(agent.pk).encode() in dual.get("/agents/").content


def test_a_user_without_tenants_sees_no_tenant_page(db: None) -> None:
    loner = signed_in(make_user("loner"))
    page = loner.get("/")
    assert b'data-testid="no-tenant"' in page.content
    assert loner.get("/runs/").status_code == 403
