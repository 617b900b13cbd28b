"""Invitations: a tenant offers membership, the person accepts (issue 13, item 6).

Before, ``POST /governance/roles`` made any username a member of the caller's tenant
(another tenant's operator included) and answered with the user's id. Now roles are for
members only (tests/platform/governance/test_roles.py) and people join by accepting an
invitation, signed in as themselves, with the token e-mailed to them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from governance import services
from governance.models import AuditEvent, Invitation
from tenants.models import Membership, Role
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.api.test_bad_input import assert_error, lenient, nothing_written

INVITATIONS = "/api/v1/governance/invitations"
ACCEPT = "/api/v1/governance/invitations/accept"


def _user(username: str, email: str = "") -> User:
    user: User = get_user_model().objects.create_user(username, email=email)
    return user


def _session(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _accept(user: User, token: str) -> Any:
    return _session(user).post(ACCEPT, {"token": token}, content_type="application/json")


def _invite(persona: Persona, capture: Any, **body: Any) -> dict[str, Any]:
    with capture(execute=True):
        response = persona.post(INVITATIONS, {"role": "operator", **body})
    assert response.status_code == 201, response.content
    assert response["Location"] == f"{INVITATIONS}/{response.json()['id']}"
    return dict(response.json())


def _actions(persona: Persona) -> list[str]:
    return list(
        AuditEvent.unscoped.filter(tenant=persona.tenant, action__startswith="invitation.")
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def test_another_tenants_operator_joins_only_by_accepting(
    owner: Persona, outsider: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    """The attack of issue 13.6 done the legitimate way: the outsider's admin invites the
    owner's operator; until she accepts, she has no way into the outsider's tenant; the
    e-mail carries the token; accepting makes her a member with the offered role, once."""
    operator = _user("operator", email="op@acme.test")
    services.assign_role(actor=ACTOR, tenant=owner.tenant, user=operator, role=Role.OPERATOR)
    invitation = _invite(outsider, django_capture_on_commit_callbacks, username="operator")
    assert invitation["status"] == "pending"
    assert invitation["accept_url"].endswith(ACCEPT)
    assert not Invitation.unscoped.filter(token_hash=invitation["token"]).exists()  # hashed
    (sent,) = mail.outbox
    assert sent.to == ["op@acme.test"]
    assert invitation["token"] in sent.body
    switch = {"X-Tenant": outsider.tenant.slug}
    assert _session(operator).get("/api/v1/agents", headers=switch).status_code == 404

    joined = _accept(operator, invitation["token"])
    assert joined.status_code == 200, joined.content
    assert joined.json() == {
        "tenant": {
            "id": outsider.tenant.pk,
            "slug": outsider.tenant.slug,
            "name": outsider.tenant.name,
        },
        "user_id": operator.pk,
        "username": "operator",
        "role": "operator",
    }
    assert _session(operator).get("/api/v1/agents", headers=switch).status_code == 200
    assert Membership.unscoped.get(tenant=outsider.tenant, user=operator).role == "operator"
    assert _actions(outsider) == ["invitation.created", "invitation.accepted"]
    listed = outsider.get(INVITATIONS).json()["results"]
    assert [(i["id"], i["status"]) for i in listed] == [(invitation["id"], "accepted")]
    assert "token" not in listed[0]
    again = _accept(operator, invitation["token"])
    assert assert_error(again, 409, "invitation_accepted")


def test_an_email_invitation_is_accepted_by_the_account_with_that_address(
    owner: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    invitation = _invite(owner, django_capture_on_commit_callbacks, email="New.Hire@Acme.test")
    assert mail.outbox[0].to == ["New.Hire@Acme.test"]
    hire = _user("hire", email="new.hire@acme.test")
    assert _accept(hire, invitation["token"]).json()["role"] == "operator"
    assert Membership.unscoped.filter(tenant=owner.tenant, user=hire).exists()


def test_inviting_says_nothing_about_who_exists(
    owner: Persona, outsider: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    """An existing account (another tenant's member) and a username that exists nowhere:
    the same 201 and the same body but for ids, token and times."""
    services.assign_role(
        actor=ACTOR, tenant=outsider.tenant, user=_user("globex-dev"), role=Role.VIEWER
    )
    bodies = []
    for username in ("globex-dev", "ghost-user"):
        body = _invite(owner, django_capture_on_commit_callbacks, username=username)
        volatile = ("id", "token", "created_at", "expires_at", "username")
        bodies.append({k: v for k, v in body.items() if k not in volatile})
    assert bodies[0] == bodies[1]


def test_a_token_for_someone_else_is_as_unknown_as_a_made_up_one(
    owner: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    invitation = _invite(owner, django_capture_on_commit_callbacks, username="rita")
    mallory = _user("mallory")
    with nothing_written(owner.tenant):
        stolen = assert_error(_accept(mallory, invitation["token"]), 404, "not_found")
        made_up = assert_error(_accept(mallory, "x" * 43), 404, "not_found")
    assert stolen["detail"] == made_up["detail"] == "Not found."
    assert not Membership.unscoped.filter(user=mallory).exists()


def test_expired_revoked_and_used_invitations_say_so(
    owner: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    rita = _user("rita")
    expired = _invite(owner, django_capture_on_commit_callbacks, username="rita")
    Invitation.unscoped.filter(pk=expired["id"]).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert_error(_accept(rita, expired["token"]), 410, "invitation_expired")
    revoked = _invite(owner, django_capture_on_commit_callbacks, username="rita")
    response = owner.delete(f"{INVITATIONS}/{revoked['id']}")
    assert response.json()["status"] == "revoked"
    assert owner.delete(f"{INVITATIONS}/{revoked['id']}").status_code == 200  # no-op
    assert_error(_accept(rita, revoked["token"]), 410, "invitation_revoked")
    assert not Membership.unscoped.filter(user=rita).exists()
    used = _invite(owner, django_capture_on_commit_callbacks, username="rita")
    assert _accept(rita, used["token"]).status_code == 200
    assert_error(lenient(owner).delete(f"{INVITATIONS}/{used['id']}"), 409, "invitation_accepted")
    assert _actions(owner).count("invitation.revoked") == 1


def test_an_api_key_cannot_accept_and_a_member_is_not_invited(
    owner: Persona, django_capture_on_commit_callbacks: Any
) -> None:
    invitation = _invite(owner, django_capture_on_commit_callbacks, username="rita")
    with nothing_written(owner.tenant):
        response = lenient(owner).post(ACCEPT, {"token": invitation["token"]})
        assert_error(response, 403)
    dana = _user("dana")
    services.assign_role(actor=ACTOR, tenant=owner.tenant, user=dana, role=Role.VIEWER)
    with nothing_written(owner.tenant):
        response = lenient(owner).post(INVITATIONS, {"username": "dana", "role": "owner"})
        assert_error(response, 409, "already_member")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "viewer"}, "email"),
        ({"role": "viewer", "email": "a@b.test", "username": "a"}, "email"),
        ({"role": "admin", "username": "a"}, "role"),
        ({"role": "viewer", "email": "not-an-address"}, "email"),
        ({"role": "viewer", "username": "bad name!"}, "username"),
        ({"role": "viewer", "username": "a", "expires_in_days": 31}, "expires_in_days"),
        ({"role": "viewer", "username": "a", "extra": 1}, "extra"),
    ],
)
def test_bad_invitations_are_422_naming_the_field(
    owner: Persona, body: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = lenient(owner).post(INVITATIONS, body)
        assert field in assert_error(response, 422, "validation_error")["errors"]


def test_only_admins_invite_and_list(owner: Persona) -> None:
    operator = _user("op")
    services.assign_role(actor=ACTOR, tenant=owner.tenant, user=operator, role=Role.OPERATOR)
    client = _session(operator)
    with nothing_written(owner.tenant):
        for response in (
            client.post(INVITATIONS, {"username": "x", "role": "owner"}, "application/json"),
            client.get(INVITATIONS),
        ):
            assert "'admin'" in assert_error(response, 403, "permission_denied")["detail"]
