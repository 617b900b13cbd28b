"""Role assignment (API and admin) and per-agent restrictions with django-guardian."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from agentflow.models import Agent, Run
from governance import services
from governance.models import AgentRestriction, AuditEvent
from tenants.context import tenant_scope
from tenants.models import Membership, Role
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.api.test_bad_input import assert_error, lenient, nothing_written

ROLES = "/api/v1/governance/roles"


def _user(username: str, **extra: Any) -> User:
    user: User = get_user_model().objects.create_user(username, **extra)
    return user


def _session(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _member(persona: Persona, username: str, role: str) -> User:
    user = _user(username)
    services.assign_role(actor=ACTOR, tenant=persona.tenant, user=user, role=role)
    return user


def _events(persona: Persona, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    return list(
        AuditEvent.unscoped.filter(tenant=persona.tenant, action__startswith=prefix)
        .order_by("sequence")
        .values_list("action", "target_id", "changes")
    )


# --- assigning and removing roles ------------------------------------------------------------


def test_a_member_gets_a_role_and_the_answer_is_the_member(owner: Persona) -> None:
    dana = _member(owner, "dana", Role.VIEWER)
    response = owner.post(ROLES, {"username": "dana", "role": "reviewer"})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user_id": dana.pk,
        "username": "dana",
        "role": "reviewer",
        "agents": None,
    }
    assert _events(owner, "membership.")[-1] == (
        "membership.granted",
        str(dana.pk),
        {"role": "reviewer"},
    )


def test_only_members_get_roles_and_others_are_one_answer(
    owner: Persona, outsider: Persona
) -> None:
    """Issue 13.6: another tenant's user and a username that exists nowhere get the same
    422 naming ``username`` (no user id, no account created, no membership), for giving a
    role and for removing one: a tenant cannot make anyone its member, nor learn who exists."""
    foreign = _member(outsider, "globex-operator", Role.OPERATOR)
    api = lenient(owner)
    answers = []
    with nothing_written(owner.tenant, outsider.tenant):
        for username in ("globex-operator", "nobody-at-all"):
            for role in ("owner", None):
                response = api.post(ROLES, {"username": username, "role": role})
                body = assert_error(response, 422, "validation_error")
                assert list(body["errors"]) == ["username"]
                assert "user_id" not in body
                answers.append((body["detail"], body["errors"]))
    assert len(set(map(repr, answers))) == 1, answers
    assert not get_user_model().objects.filter(username="nobody-at-all").exists()
    assert list(Membership.unscoped.filter(user=foreign).values_list("tenant", flat=True)) == [
        outsider.tenant.pk
    ]


def test_changing_a_role_is_audited_and_the_same_role_again_is_a_no_op(owner: Persona) -> None:
    dana = _member(owner, "dana", Role.VIEWER)
    assert owner.post(ROLES, {"username": "dana", "role": "operator"}).json()["role"] == "operator"
    assert owner.post(ROLES, {"username": "dana", "role": "operator"}).status_code == 200
    assert [e[2] for e in _events(owner, "membership.")] == [
        {"role": "viewer"},
        {"role": "operator"},
    ]
    assert Membership.unscoped.get(tenant=owner.tenant, user=dana).role == Role.OPERATOR


def test_role_null_removes_the_member_and_a_non_member_is_422(owner: Persona) -> None:
    dana = _member(owner, "dana", Role.OPERATOR)
    response = owner.post(ROLES, {"username": "dana", "role": None})
    assert response.json() == {"user_id": dana.pk, "username": "dana", "role": None, "agents": None}
    assert not Membership.unscoped.filter(tenant=owner.tenant, user=dana).exists()
    assert _events(owner, "membership.revoked") == [
        ("membership.revoked", str(dana.pk), {"role": "operator"})
    ]
    api = lenient(owner)
    with nothing_written(owner.tenant):
        for username in ("dana", "nobody"):
            response = api.post(ROLES, {"username": username, "role": None})
            assert "username" in assert_error(response, 422, "validation_error")["errors"]


def test_the_last_owner_cannot_be_removed_or_demoted(owner: Persona) -> None:
    _member(owner, "olga", Role.OWNER)
    api = lenient(owner)
    with nothing_written(owner.tenant):
        for role in (None, "operator"):
            body = assert_error(api.post(ROLES, {"username": "olga", "role": role}), 409)
            assert body["error_type"] == "last_owner"
    _member(owner, "otto", Role.OWNER)
    assert owner.post(ROLES, {"username": "olga", "role": "viewer"}).status_code == 200
    assert assert_error(api.post(ROLES, {"username": "otto", "role": None}), 409)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "bad name!", "role": "viewer"}, "username"),
        ({"username": "dana", "role": "admin"}, "role"),
        ({"username": "dana"}, "role"),
        ({"username": "dana", "role": "viewer", "agents": ["not-a-uuid"]}, "agents[0]"),
        ({"username": "dana", "role": "viewer", "agents": [str(Agent().pk)]}, "agents"),
        ({"username": "dana", "role": "viewer", "extra": 1}, "extra"),
        ({"username": 7, "role": "viewer"}, "username"),
    ],
)
def test_bad_role_requests_are_422_naming_the_field(
    owner: Persona, body: dict[str, Any], field: str
) -> None:
    _member(owner, "dana", Role.VIEWER)
    with nothing_written(owner.tenant):
        response = lenient(owner).post(ROLES, body)
        errors = assert_error(response, 422, "validation_error")["errors"]
        assert field in errors, errors
    assert not get_user_model().objects.filter(username="bad name!").exists()


def test_only_owners_and_platform_admins_assign_roles(owner: Persona) -> None:
    for role in (Role.OPERATOR, Role.REVIEWER, Role.VIEWER):
        client = _session(_member(owner, f"{role}-user", role))
        with nothing_written(owner.tenant):
            response = client.post(
                ROLES, {"username": "x", "role": "owner"}, content_type="application/json"
            )
            assert "'admin'" in assert_error(response, 403, "permission_denied")["detail"]
    boss = _member(owner, "boss", Role.OWNER)
    for name in ("x", "y"):
        _member(owner, name, Role.REVIEWER)
    response = _session(boss).post(ROLES, {"username": "x", "role": "viewer"}, "application/json")
    assert response.status_code == 200
    staff = _session(_user("staff", is_staff=True))
    response = staff.post(
        ROLES,
        {"username": "y", "role": "viewer"},
        "application/json",
        headers={"X-Tenant": owner.tenant.slug},
    )
    assert response.status_code == 200
    granted_by = _events(owner, "membership.granted")
    assert [e[1] for e in granted_by[-2:]] == [
        str(get_user_model().objects.get(username=name).pk) for name in ("x", "y")
    ]
    actors = AuditEvent.unscoped.filter(tenant=owner.tenant, action="membership.granted")
    assert str(boss.pk) in set(actors.values_list("actor_id", flat=True))


def test_members_are_listed_with_the_list_envelope(owner: Persona, agent: Agent) -> None:
    _member(owner, "amy", Role.VIEWER)
    _member(owner, "rita", Role.VIEWER)
    owner.post(ROLES, {"username": "rita", "role": "reviewer", "agents": [str(agent.pk)]})
    body = owner.get(f"{ROLES}?sort_by=role&sort_order=asc").json()
    assert body["total"] == 2
    assert [(m["username"], m["role"], m["agents"]) for m in body["results"]] == [
        ("rita", "reviewer", [str(agent.pk)]),
        ("amy", "viewer", None),
    ]


# --- restricted to some agents (django-guardian object permissions) --------------------------


@pytest.fixture
def two_agents(owner: Persona, agent: Agent) -> tuple[Agent, Agent]:
    return agent, make_agent(owner, name="billing-bot")


def test_a_restricted_reviewer_sees_only_the_granted_agents(
    owner: Persona, two_agents: tuple[Agent, Agent]
) -> None:
    _member(owner, "rita", Role.VIEWER)
    support, billing = two_agents
    body = owner.post(
        ROLES, {"username": "rita", "role": "reviewer", "agents": [str(support.pk)]}
    ).json()
    assert body["agents"] == [str(support.pk)]
    rita = get_user_model().objects.get(username="rita")
    assert rita.has_perm("agentflow.view_agent", support)
    assert not rita.has_perm("agentflow.view_agent", billing)
    client = _session(rita)
    assert client.get(f"/api/v1/agents/{support.pk}").status_code == 200
    tools = "/api/v1/governance/agents/{}/tool-permissions"
    assert client.get(tools.format(support.pk)).status_code == 200
    # Another agent of the same tenant answers like a missing one.
    hidden = client.get(f"/api/v1/agents/{billing.pk}")
    missing = client.get(f"/api/v1/agents/{Agent().pk}")
    assert assert_error(hidden, 404)["detail"] == assert_error(missing, 404)["detail"]
    assert_error(client.get(tools.format(billing.pk)), 404)
    assert _events(owner, "membership.agents")[-1] == (
        "membership.agents_restricted",
        str(rita.pk),
        {"agents": [str(support.pk)]},
    )


def test_objects_of_hidden_agents_answer_like_missing_ones(
    owner: Persona, two_agents: tuple[Agent, Agent]
) -> None:
    """Runs, conversations, documents and review requests of an agent the member may not
    see are 404 with the body of a missing object; those of a granted agent are there."""
    from hitl.services import request_review

    support, billing = two_agents
    rita = _user("rita")
    services.assign_role(
        actor=ACTOR, tenant=owner.tenant, user=rita, role=Role.REVIEWER, agents=[str(support.pk)]
    )
    paths: dict[Agent, list[str]] = {}
    for target in two_agents:
        run = owner.post(
            f"/api/v1/agents/{target.pk}/runs",
            {"user_id": "u", "message": "Where is my invoice?"},
            headers={"Prefer": "respond-async"},
        ).json()
        review = request_review(
            run=Run.unscoped.get(pk=run["id"]), result={"intent": "BILLING"}, actor=ACTOR
        )
        with tenant_scope(owner.tenant.pk):
            document = target.documents.first()
        assert document is not None
        paths[target] = [
            f"/api/v1/runs/{run['id']}",
            f"/api/v1/sessions/{run['session_id']}/conversation",
            f"/api/v1/agents/{target.pk}/knowledge/{document.pk}",
            f"/api/v1/hitl/queue/{review.pk}",
        ]
    client = _session(rita)
    for path in paths[support]:
        assert client.get(path).status_code == 200, path
    missing = assert_error(client.get(f"/api/v1/runs/{Agent().pk}"), 404)
    for path in paths[billing]:
        hidden = assert_error(client.get(path), 404, "not_found")
        assert hidden["detail"] == missing["detail"], path


def test_lists_are_filtered_in_the_database(
    owner: Persona, two_agents: tuple[Agent, Agent], django_assert_num_queries: Any
) -> None:
    _, billing = two_agents
    rita = _user("rita")
    services.assign_role(
        actor=ACTOR, tenant=owner.tenant, user=rita, role=Role.REVIEWER, agents=[str(billing.pk)]
    )
    for target in two_agents:
        owner.post(
            f"/api/v1/agents/{target.pk}/runs",
            {"user_id": "u", "message": "hi"},
            headers={"Prefer": "respond-async"},
        )
    with tenant_scope(owner.tenant.pk):
        runs = services.restrict_to_visible_agents(Run.objects.all(), rita, owner.tenant.pk)
        with django_assert_num_queries(1):  # one filtered query, not a check per row
            assert {r.agent_id for r in runs} == {billing.pk}
        agents = services.restrict_to_visible_agents(
            Agent.objects.all(), rita, owner.tenant.pk, field="pk"
        )
        assert list(agents) == [billing]
        unrestricted = _member(owner, "uma", Role.VIEWER)
        everything = services.restrict_to_visible_agents(
            Run.objects.all(), unrestricted, owner.tenant.pk
        )
        assert everything.count() == 2


def test_lifting_changing_and_keeping_a_restriction(
    owner: Persona, two_agents: tuple[Agent, Agent]
) -> None:
    _member(owner, "rita", Role.VIEWER)
    support, billing = two_agents
    owner.post(ROLES, {"username": "rita", "role": "reviewer", "agents": [str(support.pk)]})
    # A role change without "agents" keeps the restriction.
    assert owner.post(ROLES, {"username": "rita", "role": "operator"}).json()["agents"] == [
        str(support.pk)
    ]
    moved = owner.post(ROLES, {"username": "rita", "role": "operator", "agents": [str(billing.pk)]})
    assert moved.json()["agents"] == [str(billing.pk)]
    rita = get_user_model().objects.get(username="rita")
    assert not rita.has_perm("agentflow.view_agent", support)
    nothing = owner.post(ROLES, {"username": "rita", "role": "operator", "agents": []}).json()
    assert nothing["agents"] == []
    assert _session(rita).get(f"/api/v1/agents/{billing.pk}").status_code == 404
    lifted = owner.post(ROLES, {"username": "rita", "role": "operator", "agents": None}).json()
    assert lifted["agents"] is None
    assert not AgentRestriction.unscoped.filter(user=rita).exists()
    assert _session(rita).get(f"/api/v1/agents/{billing.pk}").status_code == 200


def test_removing_a_member_drops_their_agent_grants(
    owner: Persona, two_agents: tuple[Agent, Agent]
) -> None:
    _member(owner, "rita", Role.VIEWER)
    support, _ = two_agents
    owner.post(ROLES, {"username": "rita", "role": "reviewer", "agents": [str(support.pk)]})
    owner.post(ROLES, {"username": "rita", "role": None})
    rita = get_user_model().objects.get(username="rita")
    assert not rita.has_perm("agentflow.view_agent", support)
    assert not AgentRestriction.unscoped.filter(user=rita).exists()


def test_another_tenants_agent_cannot_be_granted(
    owner: Persona, outsider: Persona, agent: Agent
) -> None:
    foreign = make_agent(outsider, name="globex-bot")
    _member(owner, "rita", Role.VIEWER)
    with nothing_written(owner.tenant, outsider.tenant):
        response = lenient(owner).post(
            ROLES, {"username": "rita", "role": "reviewer", "agents": [str(foreign.pk)]}
        )
        assert "agents" in assert_error(response, 422)["errors"]


# --- the admin goes through the same services ------------------------------------------------


def test_role_changes_in_the_admin_are_audited_and_guarded(owner: Persona) -> None:
    olga = _member(owner, "olga", Role.OWNER)
    dana = _member(owner, "dana", Role.VIEWER)
    root = Client()
    root.force_login(get_user_model().objects.create_superuser("root", "", "pw-root-123!"))
    membership = Membership.unscoped.get(tenant=owner.tenant, user=dana)
    response = root.post(f"/admin/tenants/membership/{membership.pk}/change/", {"role": "operator"})
    assert response.status_code == 302, response.content[:500]
    assert Membership.unscoped.get(pk=membership.pk).role == Role.OPERATOR
    assert _events(owner, "membership.granted")[-1] == (
        "membership.granted",
        str(dana.pk),
        {"role": "operator"},
    )
    newcomer = _user("newcomer")
    response = root.post(
        "/admin/tenants/membership/add/",
        {"tenant": owner.tenant.pk, "user": newcomer.pk, "role": "reviewer"},
    )
    assert response.status_code == 302, response.content[:500]
    assert Membership.unscoped.get(tenant=owner.tenant, user=newcomer).role == Role.REVIEWER
    assert _events(owner, "membership.granted")[-1][1] == str(newcomer.pk)
    last_owner = Membership.unscoped.get(tenant=owner.tenant, user=olga)
    root.post(f"/admin/tenants/membership/{last_owner.pk}/delete/", {"post": "yes"})
    assert Membership.unscoped.filter(pk=last_owner.pk).exists()  # refused, with a message
