"""/members/ (issue 19): every member reads who is in the tenant; owners change roles,
restrict members to agents, remove them and invite people through the governance services
the API uses; bad input and foreign ids change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent
from governance import invitations as rules
from governance.models import Invitation
from tenants.context import tenant_scope
from tenants.models import Membership
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, member
from tests.platform.hitl.conftest import audit_actions

ROLES = ("viewer", "reviewer", "operator", "owner")


def roles(persona: Persona) -> dict[str, str]:
    with tenant_scope(persona.tenant.pk):
        return dict(Membership.objects.values_list("user__username", "role"))


def invitations(persona: Persona) -> list[Invitation]:
    with tenant_scope(persona.tenant.pk):
        return list(Invitation.objects.all())


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_only_owners_change(acme: Persona, role: str) -> None:
    user = member(acme.tenant, f"m-{role}", role)
    member(acme.tenant, "vera", "viewer")
    page = user.get("/members/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-username="vera"' in body
    assert 'data-nav="members"' in body
    owner = role == "owner"
    assert ('data-testid="invite-form"' in body) is owner
    assert ('data-testid="invitations-table"' in body) is owner  # invitations are `admin`
    before = roles(acme)
    for data in (
        {"action": "role", "username": "vera", "role": "operator"},
        {"action": "remove", "username": "vera"},
        {"action": "invite", "email": "new@example.com", "role": "viewer", "expires_in_days": 7},
    ):
        answer = user.post("/members/", data)
        assert answer.status_code in ((201, 302) if owner else (403,)), (role, data)
    if not owner:
        assert roles(acme) == before
        assert invitations(acme) == []


def test_owner_changes_a_role_restricts_agents_removes_and_invites(
    acme: Persona, agent: Agent, owner: User_
) -> None:
    other = make_agent(acme, name="billing")
    member(acme.tenant, "vera", "viewer")
    changed = owner.post(
        "/members/",
        {"action": "role", "username": "vera", "role": "reviewer", "agents": [str(other.pk)]},
    )
    assert changed.status_code == 302
    assert roles(acme)["vera"] == "reviewer"
    row = owner.get("/members/").content.decode().split('data-username="vera"', 1)[1]
    assert '<td data-label="Agents" data-field="agents">billing</td>' in row.split("</tr>")[0]
    # No agent selected: every agent again.
    owner.post("/members/", {"action": "role", "username": "vera", "role": "reviewer"})
    row = owner.get("/members/").content.decode().split('data-username="vera"', 1)[1]
    assert "every agent" in row.split("</tr>")[0]

    assert owner.post("/members/", {"action": "remove", "username": "vera"}).status_code == 302
    assert "vera" not in roles(acme)

    invited = owner.post(
        "/members/",
        {"action": "invite", "email": "nina@example.com", "role": "operator", "expires_in_days": 3},
    )
    assert invited.status_code == 201
    (invitation,) = invitations(acme)
    assert (invitation.email, invitation.role) == ("nina@example.com", "operator")
    assert b'data-testid="invitation-token"' in invited.content
    page = owner.get("/members/").content.decode()
    assert 'data-field="status">pending<' in page
    withdrawn = owner.post(
        "/members/", {"action": "revoke_invitation", "invitation_id": str(invitation.pk)}
    )
    assert withdrawn.status_code == 302
    assert invitations(acme)[0].revoked_at is not None
    actions = audit_actions(acme.tenant)
    assert actions["membership.revoked"] == 1
    assert actions["membership.granted"] >= 2  # vera's membership, then her new role
    assert actions["membership.agents_restricted"] == 1
    assert actions["membership.agents_unrestricted"] == 1


def test_bad_input_is_refused_on_the_form_and_changes_nothing(
    acme: Persona, globex: Persona, owner: User_
) -> None:
    member(acme.tenant, "vera", "viewer")
    member(globex.tenant, "gina", "operator")
    foreign_agent = make_agent(globex, name="globex-support")
    with tenant_scope(globex.tenant.pk):
        foreign = rules.invite_member(
            actor=ACTOR, tenant=globex.tenant, role="viewer", email="x@example.com"
        ).invitation
    before = roles(acme)
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"action": "role", "username": "vera", "role": "emperor"}, 422, "role"),
        ({"action": "role", "username": "gina", "role": "owner"}, 422, "username"),
        ({"action": "role", "username": "nobody", "role": "owner"}, 422, "username"),
        (
            {
                "action": "role",
                "username": "vera",
                "role": "viewer",
                "agents": [str(foreign_agent.pk)],
            },
            422,
            "agents",
        ),
        ({"action": "role", "username": "olivia", "role": "viewer"}, 409, "role"),  # last owner
        ({"action": "remove", "username": "olivia"}, 409, "role"),
        ({"action": "remove", "username": "gina"}, 422, "username"),
        ({"action": "invite", "role": "viewer", "expires_in_days": 7}, 422, "email"),
        (
            {
                "action": "invite",
                "email": "a@b.co",
                "username": "z",
                "role": "viewer",
                "expires_in_days": 7,
            },
            422,
            "email",
        ),
        (
            {"action": "invite", "email": "not-an-address", "role": "viewer", "expires_in_days": 7},
            422,
            "email",
        ),
        (
            {"action": "invite", "email": "a@b.co", "role": "viewer", "expires_in_days": 99},
            422,
            "expires_in_days",
        ),
        (
            {"action": "invite", "username": "vera", "role": "viewer", "expires_in_days": 7},
            409,
            "username",
        ),
        ({"action": "revoke_invitation", "invitation_id": str(foreign.pk)}, 404, None),
        ({"action": "revoke_invitation", "invitation_id": "nope"}, 404, None),
        ({"action": "explode"}, 422, None),
    ]
    for data, status, field in cases:
        answer = owner.post("/members/", data)
        assert answer.status_code == status, data
        if field:
            assert f'data-field-error="{field}"'.encode() in answer.content, data
    assert roles(acme) == before
    assert invitations(acme) == []
    assert invitations(globex)[0].revoked_at is None


def test_another_tenants_operator_sees_none_of_it(acme: Persona, globex: Persona) -> None:
    member(acme.tenant, "vera", "viewer")
    outsider = member(globex.tenant, "gus", "operator")
    page = outsider.get("/members/").content.decode()
    assert 'data-username="gus"' in page
    assert 'data-username="vera"' not in page
