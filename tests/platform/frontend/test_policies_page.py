"""/policies/ (issue 19): escalation policies, SLA settings and reviewer availability.

Every member reads; operators and owners change policies, settings and anyone's
availability; a reviewer sets only their own. Reviewers become available when they sign
in (the login view's explicit call). Bad input is shown per field and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from agentflow.models import Agent
from hitl import services as hitl_services
from hitl.models import EscalationPolicy, ReviewerAvailability, ReviewSettings
from hitl.policy import review_config
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.frontend.conftest import PASSWORD, User_, member
from tests.platform.hitl.conftest import audit_actions

ROLES = ("viewer", "reviewer", "operator", "owner")
MANAGERS = ("operator", "owner")


def policy_form(**overrides: Any) -> dict[str, Any]:
    return {
        "action": "create_policy",
        "name": "critical refunds",
        "position": "10",
        "enabled": "on",
        "priorities": ["critical"],
        "kinds": [],
        "intents": "refund, billing",
        "chain": ["owner", "operator"],  # ticked in any order: the ladder climbs by rank
        "on_breach": "escalate",
        "escalation_minutes": "",
        "expire_after_minutes": "120",
        "on_expiry": "auto_reject",
        "notify_email": "on",
        "extra_emails": "lead@example.com",
        **overrides,
    }


def settings_form(**overrides: Any) -> dict[str, Any]:
    return {
        "action": "settings",
        "agent": "",
        "sla_critical": "5",
        "sla_high": "",
        "sla_medium": "",
        "sla_low": "",
        "handoff_message": "A person will answer soon ({reason}).",
        "on_reject": "",
        **overrides,
    }


def state(persona: Persona) -> tuple[list[Any], list[Any], list[Any]]:
    with tenant_scope(persona.tenant.pk):
        return (
            list(EscalationPolicy.objects.order_by("pk").values()),
            list(ReviewSettings.objects.order_by("pk").values()),
            list(ReviewerAvailability.objects.order_by("pk").values("user_id", "available")),
        )


def make_policy(persona: Persona, name: str = "p1", **extra: Any) -> EscalationPolicy:
    with tenant_scope(persona.tenant.pk):
        return EscalationPolicy.objects.create(name=name, chain=["reviewer", "owner"], **extra)


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_only_managers_change(acme: Persona, agent: Agent, role: str) -> None:
    user = member(acme.tenant, f"p-{role}", role)
    policy = make_policy(acme)
    page = user.get("/policies/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-policy-id="{policy.pk}"' in body
    assert 'data-field="chain">reviewer → owner<' in body
    assert 'data-testid="default-policy"' in body
    manages = role in MANAGERS
    assert ('data-testid="policy-create-form"' in body) is manages
    assert ('data-testid="settings-form"' in body) is manages
    assert user.get(f"/policies/{policy.pk}/").status_code == 200
    before = state(acme)
    for path, data in (
        ("/policies/", policy_form()),
        ("/policies/", {"action": "disable_policy", "policy_id": policy.pk}),
        ("/policies/", {"action": "delete_policy", "policy_id": policy.pk}),
        ("/policies/", settings_form()),
        (f"/policies/{policy.pk}/", policy_form(name="renamed")),
    ):
        answer = user.post(path, data)
        if not manages:
            assert answer.status_code == 403, (role, path, data)
    if not manages:
        assert state(acme) == before


def test_an_operator_manages_policies(acme: Persona, operator: User_) -> None:
    assert operator.post("/policies/", policy_form()).status_code == 302
    ((row,), _, _) = state(acme)
    assert row["chain"] == ["operator", "owner"]
    assert row["priorities"] == ["critical"]
    assert row["intents"] == ["refund", "billing"]
    assert row["extra_emails"] == ["lead@example.com"]
    assert (row["expire_after_minutes"], row["escalation_minutes"]) == (120, None)
    assert (row["notify_email"], row["notify_slack"], row["enabled"]) == (True, False, True)
    pk = row["id"]
    edit = operator.get(f"/policies/{pk}/").content.decode()
    assert 'value="refund, billing"' in edit
    saved = operator.post(
        f"/policies/{pk}/", policy_form(name="all refunds", priorities=[], chain=["reviewer"])
    )
    assert saved.status_code == 302
    ((row,), _, _) = state(acme)
    assert (row["name"], row["priorities"], row["chain"]) == ("all refunds", [], ["reviewer"])
    toggle = {"action": "disable_policy", "policy_id": pk}
    assert operator.post("/policies/", toggle).status_code == 302
    assert state(acme)[0][0]["enabled"] is False
    assert (
        operator.post("/policies/", {"action": "delete_policy", "policy_id": pk}).status_code == 302
    )
    assert state(acme)[0] == []
    actions = audit_actions(acme.tenant)
    assert actions["hitl.policy_created"] == 1
    assert actions["hitl.policy_updated"] == 2
    assert actions["hitl.policy_deleted"] == 1


def test_sla_settings_for_the_tenant_and_one_agent(
    acme: Persona, agent: Agent, owner: User_
) -> None:
    assert owner.post("/policies/", settings_form()).status_code == 302
    per_agent = settings_form(
        agent=str(agent.pk), sla_critical="", sla_high="7", on_reject="close_thread"
    )
    assert owner.post("/policies/", per_agent).status_code == 302
    with tenant_scope(acme.tenant.pk):
        config = review_config(tier=acme.tenant.tier, agent_id=agent.pk)
    assert (config.sla_minutes["critical"], config.sla_minutes["high"]) == (5, 7)
    assert config.on_reject == "close_thread"
    assert config.handoff_message.startswith("A person will answer soon")
    body = owner.get("/policies/").content.decode()
    assert 'data-settings="tenant"' in body
    assert f'data-settings="{agent.pk}"' in body
    undo = {"action": "delete_settings", "agent_id": str(agent.pk)}
    assert owner.post("/policies/", undo).status_code == 302
    with tenant_scope(acme.tenant.pk):
        assert ReviewSettings.objects.filter(agent__isnull=False).count() == 0
        assert review_config(tier=acme.tenant.tier, agent_id=agent.pk).on_reject == "handoff"
    assert audit_actions(acme.tenant)["hitl.settings_changed"] == 2


def test_bad_input_is_shown_per_field_and_changes_nothing(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_
) -> None:
    policy = make_policy(acme)
    make_policy(acme, "taken")
    foreign = make_policy(globex, "theirs")
    before, theirs = state(acme), state(globex)
    cases: list[tuple[str, dict[str, Any], int, str | None]] = [
        ("/policies/", policy_form(name=""), 422, "name"),
        ("/policies/", policy_form(name="taken"), 422, "name"),
        ("/policies/", policy_form(chain=[]), 422, "chain"),
        ("/policies/", policy_form(chain=["admin"]), 422, "chain"),
        ("/policies/", policy_form(priorities=["urgent"]), 422, "priorities"),
        ("/policies/", policy_form(on_breach="explode"), 422, "on_breach"),
        ("/policies/", policy_form(expire_after_minutes="0"), 422, "expire_after_minutes"),
        ("/policies/", policy_form(position="-1"), 422, "position"),
        ("/policies/", policy_form(extra_emails="not-an-email"), 422, "extra_emails"),
        (f"/policies/{policy.pk}/", policy_form(name="taken"), 422, "name"),
        ("/policies/", settings_form(sla_critical="0"), 422, "sla_critical"),
        ("/policies/", settings_form(sla_high="soon"), 422, "sla_high"),
        ("/policies/", settings_form(on_reject="shrug"), 422, "on_reject"),
        ("/policies/", settings_form(agent=str(foreign_agent.pk)), 422, "agent"),
        ("/policies/", {"action": "delete_policy", "policy_id": "x"}, 404, None),
        ("/policies/", {"action": "delete_policy", "policy_id": foreign.pk}, 404, None),
        ("/policies/", {"action": "delete_settings", "agent_id": str(foreign_agent.pk)}, 404, None),
        (f"/policies/{foreign.pk}/", policy_form(), 404, None),
        ("/policies/", {"action": "explode"}, 422, None),
    ]
    for path, data, status, field in cases:
        answer = owner.post(path, data)
        assert answer.status_code == status, (path, data)
        if field:
            assert f'data-field-error="{field}"'.encode() in answer.content, (path, data)
    assert state(acme) == before
    assert state(globex) == theirs
    assert owner.get(f"/policies/{foreign.pk}/").status_code == 404


def _available(persona: Persona, user: User_) -> bool | None:
    with tenant_scope(persona.tenant.pk):
        row = ReviewerAvailability.objects.filter(user_id=user.user.pk).first()
    return None if row is None else row.available


def test_availability_reviewers_set_their_own_managers_anyones(
    acme: Persona, globex: Persona, reviewer: User_, operator: User_, viewer: User_
) -> None:
    rita = {"action": "availability", "user_id": reviewer.user.pk}
    assert (
        reviewer.post("/policies/", {**rita, "available": "1", "capacity": "3"}).status_code == 302
    )
    assert _available(acme, reviewer) is True
    body = reviewer.get("/policies/").content.decode()
    row = body.split(f'data-reviewer-id="{reviewer.user.pk}"', 1)[1].split("</tr>", 1)[0]
    assert "available" in row
    assert 'value="3"' in row
    otto = {"action": "availability", "user_id": operator.user.pk, "available": "1"}
    assert reviewer.post("/policies/", otto).status_code == 403  # not their own
    assert _available(acme, operator) is None
    assert viewer.post("/policies/", {**rita, "available": "0"}).status_code == 403
    assert operator.post("/policies/", {**rita, "available": "0"}).status_code == 302
    assert _available(acme, reviewer) is False
    # Bad input: named, nothing changed; a viewer or a stranger is not a reviewer here.
    for data, status, field in (
        ({**rita, "available": "maybe"}, 422, "available"),
        ({**rita, "available": "1", "capacity": "0"}, 422, "capacity"),
        ({**rita, "user_id": "abc", "available": "1"}, 422, "user_id"),
        ({**rita, "user_id": viewer.user.pk, "available": "1"}, 404, None),
    ):
        answer = operator.post("/policies/", data)
        assert answer.status_code == status, data
        if field:
            assert f'data-field-error="{field}"'.encode() in answer.content, data
    assert _available(acme, reviewer) is False
    outsider = member(globex.tenant, "gus", "operator")
    assert outsider.post("/policies/", {**rita, "available": "1"}).status_code == 404
    assert reviewer.user.username not in outsider.get("/policies/").content.decode()
    assert _available(acme, reviewer) is False


def test_reviewers_become_available_when_they_sign_in(acme: Persona, globex: Persona) -> None:
    rita = member(acme.tenant, "rita", "reviewer")
    from tenants import services as tenant_services

    tenant_services.add_member(actor=ACTOR, tenant=globex.tenant, user=rita.user, role="viewer")
    vic = member(acme.tenant, "vic", "viewer")
    otto = member(acme.tenant, "otto", "operator")
    hitl_services.set_availability(  # otto chose to be away: signing in keeps it
        actor=ACTOR, tenant_id=acme.tenant.pk, user_id=otto.user.pk, available=False
    )
    for user in (rita, vic, otto):
        answer = Client().post("/login/", {"username": user.user.username, "password": PASSWORD})
        assert answer.status_code == 302
    assert _available(acme, rita) is True
    assert _available(globex, rita) is None  # a viewer there: not a reviewer
    assert _available(acme, vic) is None
    assert _available(acme, otto) is False
    assert audit_actions(acme.tenant)["hitl.availability_changed"] == 2
    # A second sign-in after going away keeps the choice too.
    hitl_services.set_availability(
        actor=ACTOR, tenant_id=acme.tenant.pk, user_id=rita.user.pk, available=False
    )
    Client().post("/login/", {"username": "rita", "password": PASSWORD})
    assert _available(acme, rita) is False
    failed = Client().post("/login/", {"username": "vic", "password": "wrong"})
    assert failed.status_code == 200
