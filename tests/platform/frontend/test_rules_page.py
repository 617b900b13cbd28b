"""/rules/ (issue 19): event rules listed for every member; operators and owners create,
edit, enable, disable and delete them through the API's service functions; bad input is
shown per field and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent
from learning import services
from learning.models import EventRule
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, member
from tests.platform.hitl.conftest import audit_actions

ROLES = ("viewer", "reviewer", "operator", "owner")
MANAGERS = ("operator", "owner")


def make_rule(persona: Persona, agent: Agent, name: str = "new tickets", **extra: Any) -> EventRule:
    return services.create_rule(
        actor=ACTOR,
        tenant_id=persona.tenant.pk,
        name=name,
        event_kind="zendesk.ticket.created",
        agent=agent,
        **extra,
    )


def rules(persona: Persona) -> list[tuple[Any, ...]]:
    with tenant_scope(persona.tenant.pk):
        return list(
            EventRule.objects.order_by("name").values_list(
                "pk", "name", "event_kind", "conditions", "agent_id", "priority", "enabled"
            )
        )


def form(agent: Agent, **overrides: str) -> dict[str, str]:
    return {
        "action": "create",
        "name": "vip tickets",
        "event_kind": "zendesk.ticket.*",
        "agent": str(agent.pk),
        "conditions": '{"priority": "high", "tags": "vip"}',
        "priority": "high",
        "reply_url": "",
        "enabled": "on",
        **overrides,
    }


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_only_managers_change(acme: Persona, agent: Agent, role: str) -> None:
    user = member(acme.tenant, f"r-{role}", role)
    rule = make_rule(acme, agent, conditions={"priority": "high"})
    page = user.get("/rules/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-rule-id="{rule.pk}"' in body
    assert '<dd data-key="priority">high</dd>' in body  # conditions as labelled fields
    manages = role in MANAGERS
    assert ('data-testid="rule-create-form"' in body) is manages
    assert ('data-action="disable"' in body) is manages
    assert user.get(f"/rules/{rule.pk}/").status_code == 200
    before = rules(acme)
    for path, data in (
        ("/rules/", form(agent)),
        ("/rules/", {"action": "disable", "rule_id": str(rule.pk)}),
        ("/rules/", {"action": "delete", "rule_id": str(rule.pk)}),
        (f"/rules/{rule.pk}/", form(agent, name="renamed")),
    ):
        answer = user.post(path, data)
        if not manages:
            assert answer.status_code == 403, (role, path, data)
    if not manages:
        assert rules(acme) == before


def test_an_operator_creates_edits_toggles_and_deletes(
    acme: Persona, agent: Agent, operator: User_
) -> None:
    created = operator.post("/rules/", form(agent))
    assert created.status_code == 302
    ((pk, name, kind, conditions, agent_id, priority, enabled),) = rules(acme)
    assert (name, kind, agent_id, priority, enabled) == (
        "vip tickets",
        "zendesk.ticket.*",
        agent.pk,
        "high",
        True,
    )
    assert conditions == {"priority": "high", "tags": "vip"}

    edit = operator.get(f"/rules/{pk}/").content.decode()
    assert 'value="vip tickets"' in edit
    assert "&quot;tags&quot;: &quot;vip&quot;" in edit
    billing = make_agent(acme, "billing")
    saved = operator.post(
        f"/rules/{pk}/", form(billing, name="vip", conditions="", enabled="", priority="low")
    )
    assert saved.status_code == 302
    assert rules(acme) == [(pk, "vip", "zendesk.ticket.*", {}, billing.pk, "low", False)]

    assert operator.post("/rules/", {"action": "enable", "rule_id": str(pk)}).status_code == 302
    assert rules(acme)[0][-1] is True
    assert operator.post("/rules/", {"action": "disable", "rule_id": str(pk)}).status_code == 302
    assert rules(acme)[0][-1] is False
    assert operator.post("/rules/", {"action": "delete", "rule_id": str(pk)}).status_code == 302
    assert rules(acme) == []
    actions = audit_actions(acme.tenant)
    assert actions["event_rule.created"] == 1
    assert actions["event_rule.updated"] == 3
    assert actions["event_rule.deleted"] == 1


def test_bad_input_is_shown_per_field_and_changes_nothing(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_
) -> None:
    rule = make_rule(acme, agent)
    make_rule(acme, agent, name="taken")
    foreign = make_rule(globex, foreign_agent)
    before, theirs = rules(acme), rules(globex)
    cases: list[tuple[str, dict[str, str], int, str | None]] = [
        ("/rules/", form(agent, name=""), 422, "name"),
        ("/rules/", form(agent, name="n" * 201), 422, "name"),
        ("/rules/", form(agent, name="taken"), 422, "name"),
        ("/rules/", form(agent, event_kind="Zendesk Ticket"), 422, "event_kind"),
        ("/rules/", form(agent, conditions="[1, 2]"), 422, "conditions"),
        ("/rules/", form(agent, conditions="{not json"), 422, "conditions"),
        ("/rules/", form(agent, conditions='{"tags": ["a"]}'), 422, "conditions"),
        ("/rules/", form(agent, priority="urgent"), 422, "priority"),
        ("/rules/", form(agent, reply_url="https://evil.example/x"), 422, "reply_url"),
        ("/rules/", form(foreign_agent), 422, "agent"),  # another tenant's agent
        (f"/rules/{rule.pk}/", form(agent, name="taken"), 422, "name"),
        (f"/rules/{rule.pk}/", form(agent, event_kind=""), 422, "event_kind"),
        ("/rules/", {"action": "delete", "rule_id": "nope"}, 404, None),
        ("/rules/", {"action": "delete", "rule_id": str(foreign.pk)}, 404, None),
        ("/rules/", {"action": "disable", "rule_id": str(foreign.pk)}, 404, None),
        (f"/rules/{foreign.pk}/", form(agent), 404, None),
        ("/rules/", {"action": "explode"}, 422, None),
    ]
    for path, data, status, field in cases:
        answer = owner.post(path, data)
        assert answer.status_code == status, (path, data)
        if field:
            assert f'data-field-error="{field}"'.encode() in answer.content, (path, data)
    assert rules(acme) == before
    assert rules(globex) == theirs
    assert owner.get(f"/rules/{foreign.pk}/").status_code == 404


def test_another_tenants_operator_sees_none_of_it(
    acme: Persona, globex: Persona, agent: Agent
) -> None:
    rule = make_rule(acme, agent)
    outsider = member(globex.tenant, "gus", "operator")
    page = outsider.get("/rules/").content.decode()
    assert str(rule.pk) not in page
    assert 'data-testid="rules-empty"' in page
    assert outsider.get(f"/rules/{rule.pk}/").status_code == 404
    gone = outsider.post("/rules/", {"action": "delete", "rule_id": str(rule.pk)})
    assert gone.status_code == 404
    assert len(rules(acme)) == 1
