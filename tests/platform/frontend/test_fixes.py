"""Issue 19's concrete dashboard bugs: favicon, reviewers' landing page, role-consistent
pages, the tenants page's role column."""

from __future__ import annotations

import pytest
from django.test import Client

from agentflow.models import Agent
from tenants import services as tenant_services
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.frontend.conftest import PASSWORD, User_, make_user


def test_favicon_is_served_and_linked(acme: Persona, operator: User_) -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"] == "/static/frontend/favicon.ico"
    icon = Client().get(response["Location"])
    assert icon.status_code == 200
    assert icon.getvalue()[:4] == b"\x00\x00\x01\x00"  # an ICO header
    for page in (operator.get("/"), Client().get("/login/")):
        assert b'rel="icon" href="/static/frontend/favicon.svg"' in page.content
        assert b'rel="icon" href="/static/frontend/favicon.ico"' in page.content


@pytest.mark.parametrize(
    ("role", "landing"),
    [("reviewer", "/hitl/"), ("viewer", "/"), ("operator", "/"), ("owner", "/")],
)
def test_signing_in_lands_reviewers_on_their_queue(acme: Persona, role: str, landing: str) -> None:
    user = make_user(f"l-{role}")
    tenant_services.add_member(actor=ACTOR, tenant=acme.tenant, user=user, role=role)
    client = Client()
    signed = client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert signed.status_code == 302
    assert signed["Location"] == landing
    # An explicit next still wins, and a signed-in visit to /login/ goes to the same place.
    assert client.get("/login/")["Location"] == landing
    again = Client().post("/login/?next=/runs/", {"username": user.username, "password": PASSWORD})
    assert again["Location"] == "/runs/"


def test_reviewers_read_agents_and_the_audit_trail_as_the_api_lets_them(
    acme: Persona, agent: Agent, reviewer: User_
) -> None:
    for path in ("/agents/", f"/agents/{agent.pk}/", "/audit/"):
        assert reviewer.get(path).status_code == 200, path
    # Reading is all: the API's write scope is not theirs, nor the page's forms.
    detail = reviewer.get(f"/agents/{agent.pk}/")
    assert b'data-testid="agent-config-form"' not in detail.content
    assert reviewer.post(f"/agents/{agent.pk}/", {"name": "x", "config": "{}"}).status_code == 403
    assert reviewer.get("/tenants/").status_code == 403
    agent.refresh_from_db()
    assert agent.name == "support"


def test_the_tenants_page_shows_the_users_role(
    acme: Persona, globex: Persona, operator: User_
) -> None:
    tenant_services.add_member(actor=ACTOR, tenant=globex.tenant, user=operator.user, role="owner")
    page = operator.get("/tenants/").content.decode()
    for tenant, role in ((acme.tenant, "operator"), (globex.tenant, "owner")):
        row = page.split(f'data-tenant-id="{tenant.pk}"', 1)[1].split("</tr>", 1)[0]
        assert f'<td data-field="role">{role}</td>' in row
