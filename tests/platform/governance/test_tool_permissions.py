"""Agent permission levels on tools: none < read < execute < admin, denied unless granted,
a grant to a role inherited by the roles above it, capped by what the role may ever do."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent
from governance import services
from governance.audit import Actor
from governance.models import AuditEvent
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, lenient, nothing_written

ROLES = services.ROLE_HIERARCHY  # viewer, reviewer, operator, owner, platform_admin


def _grant(agent: Agent, *grants: tuple[str, str, str]) -> None:
    services.set_tool_permissions(
        actor=Actor.system("tests"),
        agent=agent,
        grants=[{"tool": t, "role": r, "level": lvl} for t, r, lvl in grants],
    )


def _levels(agent: Agent, tool: str) -> list[str]:
    return [services.effective_tool_permission(agent, tool, role) for role in ROLES]


def test_tools_are_denied_by_default(agent: Agent) -> None:
    assert _levels(agent, "refund") == ["none"] * len(ROLES)
    assert services.effective_tool_permission(agent, "refund", "intern") == "none"


def test_a_grant_is_capped_by_each_roles_ceiling(agent: Agent) -> None:
    _grant(agent, ("refund", "", "admin"))
    assert _levels(agent, "refund") == ["read", "read", "execute", "admin", "admin"]


def test_a_grant_to_a_role_is_inherited_upwards_only(agent: Agent) -> None:
    _grant(agent, ("lookup_order", "reviewer", "read"))
    assert _levels(agent, "lookup_order") == ["none", "read", "read", "read", "read"]


def test_the_highest_applicable_grant_counts(agent: Agent) -> None:
    _grant(agent, ("refund", "", "read"), ("refund", "operator", "execute"))
    assert _levels(agent, "refund") == ["read", "read", "execute", "execute", "execute"]


def test_a_tools_own_rows_override_the_agents_default(agent: Agent) -> None:
    _grant(agent, ("*", "", "execute"), ("delete_account", "", "none"))
    assert _levels(agent, "search_kb") == ["read", "read", "execute", "execute", "execute"]
    assert _levels(agent, "delete_account") == ["none"] * len(ROLES)


def test_grants_are_per_agent(owner: Persona, agent: Agent) -> None:
    from tests.platform.api.conftest import make_agent

    other = make_agent(owner, name="billing-bot")
    _grant(agent, ("refund", "", "execute"))
    assert services.effective_tool_permission(other, "refund", "owner") == "none"


def test_the_registry_gets_a_whole_agent_in_one_query(
    agent: Agent, django_assert_num_queries: Any
) -> None:
    _grant(agent, ("*", "", "read"), ("refund", "owner", "admin"))
    with django_assert_num_queries(1):
        levels = services.effective_tool_permissions(agent, "owner", ["refund", "search", "x"])
    assert levels == {"refund": "admin", "search": "read", "x": "read"}
    assert services.allows(levels["refund"], "execute")
    assert not services.allows(levels["search"], "execute")


# --- over the API --------------------------------------------------------------------------


def _path(agent: Agent) -> str:
    return f"/api/v1/governance/agents/{agent.pk}/tool-permissions"


def test_put_replaces_the_grants_and_get_shows_the_effective_levels(
    owner: Persona, agent: Agent
) -> None:
    assert owner.get(_path(agent)).json()["permissions"] == []
    grants = [
        {"tool": "*", "level": "read"},
        {"tool": "refund", "role": "operator", "level": "execute"},
    ]
    response = owner.client.put(
        _path(agent),
        {"permissions": grants},
        content_type="application/json",
        headers={"Authorization": f"Bearer {owner.key}"},
    )
    assert response.status_code == 200, response.content
    body = owner.get(_path(agent)).json()
    assert body["permissions"] == [
        {"tool": "*", "role": "", "level": "read"},
        {"tool": "refund", "role": "operator", "level": "execute"},
    ]
    assert body["effective"]["viewer"] == {"*": "read", "refund": "read"}
    assert body["effective"]["operator"] == {"*": "read", "refund": "execute"}
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="agent.tool_permissions_changed")
    assert event.target_id == str(agent.pk)
    assert event.changes["before"] == []
    assert len(event.changes["after"]) == 2


def test_the_same_grants_again_are_not_a_change(owner: Persona, agent: Agent) -> None:
    _grant(agent, ("*", "", "read"))
    _grant(agent, ("*", "", "read"))
    events = AuditEvent.unscoped.filter(
        tenant=owner.tenant, action="agent.tool_permissions_changed"
    )
    assert events.count() == 1


@pytest.mark.parametrize(
    ("grants", "field"),
    [
        ([{"tool": "refund", "level": "superuser"}], "permissions[0].level"),
        ([{"tool": "refund", "role": "intern", "level": "read"}], "permissions[0].role"),
        ([{"tool": "", "level": "read"}], "permissions[0].tool"),
        ([{"tool": "a b", "level": "read"}], "permissions"),
        ([{"tool": "x", "level": "read"}, {"tool": "x", "level": "admin"}], "permissions"),
        ([{"tool": "x", "level": "read", "scope": "all"}], "permissions[0].scope"),
        ("refund", "permissions"),
    ],
)
def test_bad_grants_are_422_naming_the_entry_and_change_nothing(
    owner: Persona, agent: Agent, grants: Any, field: str
) -> None:
    _grant(agent, ("*", "", "read"))
    with nothing_written(owner.tenant):
        response = lenient(owner).client.put(
            _path(agent),
            {"permissions": grants},
            content_type="application/json",
            headers={"Authorization": f"Bearer {owner.key}"},
        )
        errors = assert_error(response, 422, "validation_error")["errors"]
        assert field in errors, errors
