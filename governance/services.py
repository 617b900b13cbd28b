"""Roles, per-agent restrictions (django-guardian) and tool permission levels (SPEC 8).

Every write is one transaction with its audit event (ARCHITECTURE habit 2). Roles live on
``tenants.Membership``; an exception to a role ("this reviewer sees only these agents")
is a guardian object permission plus an ``AgentRestriction`` row saying the member is
restricted, so lists can be filtered in the database rather than checked afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from guardian.models import UserObjectPermission
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm

from agentflow.models import Agent
from governance.audit import Actor, append
from governance.models import AgentRestriction, AgentToolPermission, ToolPermissionLevel
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import Membership, Role, Tenant
from tenants.roles import ROLES, by_rank

VIEW_AGENT = "agentflow.view_agent"
# Lowest to highest: a grant to a role is a grant to every role above it (tenants.roles).
ROLE_HIERARCHY: tuple[str, ...] = by_rank(tuple(ROLES))
LEVELS: tuple[str, ...] = tuple(ToolPermissionLevel.values)  # none < read < execute < admin
# The most a role may ever do with a tool, whatever an agent grants.
ROLE_CEILING: dict[str, str] = {role: grant.tool_ceiling for role, grant in ROLES.items()}
ANY_TOOL = "*"
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class GovernanceError(ValueError):
    """A governance request that cannot be honoured; ``field`` names the culprit."""

    def __init__(self, message: str, field: str = "non_field_errors") -> None:
        super().__init__(message)
        self.field = field


class LastOwner(GovernanceError):
    """Removing or demoting the tenant's only owner would leave nobody to administer it."""


class NotAMember(GovernanceError):
    """The user is not a member of this tenant: unknown and foreign usernames alike, so
    the answer says nothing about who exists elsewhere on the platform."""

    def __init__(self) -> None:
        super().__init__(
            "no member of this tenant has this username; to bring someone in, invite them "
            "(POST /api/v1/governance/invitations)",
            "username",
        )


# --- roles ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberView:
    user_id: int
    username: str
    role: str
    agents: list[str] | None  # None: every agent of the tenant


def _lock_tenant(tenant: Tenant) -> None:
    # Serialises role changes per tenant, so two owners demoting each other at once
    # cannot both succeed and leave the tenant without an owner.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()


def _ensure_another_owner(user: User) -> None:
    if not Membership.objects.filter(role=Role.OWNER).exclude(user=user).exists():
        raise LastOwner("the tenant's last owner cannot be removed or demoted", "role")


class _Keep:
    """Leave the member's agent restriction as it is."""


KEEP = _Keep()


def member_by_username(tenant: Tenant, username: str) -> User:
    """The member of ``tenant`` called ``username``, or :class:`NotAMember`."""
    membership = Membership.objects.select_related("user").filter(user__username=username).first()
    if membership is None:
        raise NotAMember()
    return membership.user


def assign_role(
    *,
    actor: Actor,
    tenant: Tenant,
    user: User,
    role: str,
    agents: Sequence[str] | _Keep | None = KEEP,
    members_only: bool = False,
) -> MemberView:
    """Give ``user`` ``role`` in ``tenant``; ``agents``: restrict to these, None: every
    agent, ``KEEP`` (default): as before (a new member sees every agent).

    ``members_only``: the tenant's own request (the API), which may change its members'
    roles but not make anyone a member (that is an invitation the person accepts); the
    platform's callers (Django admin, demo data, an accepted invitation) may add members.
    """
    if role not in Role.values:
        raise GovernanceError(f"unknown role {role!r}; use one of {', '.join(Role.values)}", "role")
    with tenant_scope(tenant.pk):  # an entry point: the Django admin and demo data call it
        with transaction.atomic():
            _lock_tenant(tenant)
            current = Membership.objects.filter(user=user).values_list("role", flat=True).first()
            if current is None and members_only:
                raise NotAMember()
            if current == Role.OWNER and role != Role.OWNER:
                _ensure_another_owner(user)
            if current != role:
                tenant_services.add_member(actor=actor, tenant=tenant, user=user, role=role)
            if not isinstance(agents, _Keep):
                _set_agents(actor, tenant, user, None if agents is None else list(agents))
        return member_view(tenant, user)


def revoke_role(*, actor: Actor, tenant: Tenant, user: User) -> None:
    """Remove ``user`` from ``tenant`` with every agent grant they had there."""
    with transaction.atomic(), tenant_scope(tenant.pk):
        _lock_tenant(tenant)
        membership = Membership.objects.filter(user=user).first()
        if membership is None:
            raise NotAMember()
        if membership.role == Role.OWNER:
            _ensure_another_owner(user)
        _set_agents(actor, tenant, user, None, audit=False)
        membership.delete()
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="membership.revoked",
            target_type="user",
            target_id=user.pk,
            changes={"role": membership.role},
        )


def _granted_agents(user: User) -> QuerySet[Agent]:
    """This tenant's agents (the caller's scope) that ``user`` holds view_agent on."""
    return get_objects_for_user(
        user,
        VIEW_AGENT,
        klass=Agent.objects.all(),
        use_groups=False,
        with_superuser=False,
        accept_global_perms=False,
    )


def _set_agents(
    actor: Actor,
    tenant: Tenant,
    user: User,
    agent_ids: list[str] | None,
    *,
    audit: bool = True,
) -> None:
    """Restrict ``user`` to ``agent_ids`` (None: lift the restriction). In scope, atomic."""
    wanted: list[Agent] = []
    if agent_ids is not None:
        unique = list(dict.fromkeys(str(a) for a in agent_ids))
        wanted = list(Agent.objects.filter(pk__in=unique))
        missing = sorted(set(unique) - {str(a.pk) for a in wanted})
        if missing:
            # Another tenant's agents are "not found" too: no existence oracle.
            raise GovernanceError(f"unknown agent(s): {', '.join(missing)}", "agents")
    held = list(_granted_agents(user))
    was_restricted = AgentRestriction.objects.filter(user=user).exists()
    keep = {a.pk for a in wanted}
    stale = [a for a in held if a.pk not in keep]
    new = [a for a in wanted if a.pk not in {h.pk for h in held}]
    # guardian takes lists of objects (bulk), which assign_perm's type hints do not say.
    if stale:
        remove_perm(VIEW_AGENT, user, stale)
    if new:
        assign_perm(VIEW_AGENT, user, new)  # type: ignore[arg-type]
    if agent_ids is None:
        AgentRestriction.objects.filter(user=user).delete()
    else:
        AgentRestriction.objects.get_or_create(user=user)
    changed = bool(stale or new) or was_restricted != (agent_ids is not None)
    if audit and changed:
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="membership.agents_restricted"
            if agent_ids is not None
            else "membership.agents_unrestricted",
            target_type="user",
            target_id=user.pk,
            changes={
                "agents": sorted(str(a.pk) for a in wanted) if agent_ids is not None else None
            },
        )


def member_view(tenant: Tenant, user: User) -> MemberView:
    """``user``'s membership of ``tenant``, read inside its scope."""
    membership = Membership.objects.select_related("user").get(user=user)
    return MemberView(
        user_id=membership.user_id,
        username=membership.user.get_username(),
        role=membership.role,
        agents=_agent_list(user),
    )


def _agent_list(user: User) -> list[str] | None:
    if not AgentRestriction.objects.filter(user=user).exists():
        return None
    return sorted(str(pk) for pk in _granted_agents(user).values_list("pk", flat=True))


def members(tenant: Tenant) -> QuerySet[Membership]:
    """The tenant's memberships (with users), for listing; see ``member_views``."""
    return Membership.objects.select_related("user").all()


def member_views(tenant: Tenant, page: Iterable[Membership]) -> list[MemberView]:
    """One page of members with their agent lists, in three queries whatever the page size."""
    rows = list(page)
    restricted = set(
        AgentRestriction.objects.filter(user_id__in=[m.user_id for m in rows]).values_list(
            "user_id", flat=True
        )
    )
    agents = _agents_by_user(restricted)
    return [
        MemberView(
            user_id=m.user_id,
            username=m.user.get_username(),
            role=m.role,
            agents=sorted(agents.get(m.user_id, ())) if m.user_id in restricted else None,
        )
        for m in rows
    ]


def _agents_by_user(user_ids: set[int]) -> dict[int, list[str]]:
    if not user_ids:
        return {}
    rows = UserObjectPermission.objects.filter(
        user_id__in=user_ids,
        permission__codename="view_agent",
        permission__content_type__app_label="agentflow",
        object_pk__in=[str(pk) for pk in Agent.objects.values_list("pk", flat=True)],
    ).values_list("user_id", "object_pk")
    found: dict[int, list[str]] = {}
    for user_id, object_pk in rows:
        found.setdefault(user_id, []).append(object_pk)
    return found


# --- restrictions as query filters --------------------------------------------------------


def visible_agents(user: Any, tenant_id: int) -> QuerySet[Agent] | None:
    """The agents ``user`` may see in the tenant, or None when not restricted.

    A queryset, not a list: callers filter with ``agent__in=visible`` so the database
    does the work (lists are filtered, never checked row by row afterwards).
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if not AgentRestriction.unscoped.filter(tenant_id=tenant_id, user=user).exists():
        return None
    return _granted_agents(user)  # callers are inside the tenant's scope (view, socket)


def restrict_to_visible_agents(
    queryset: QuerySet[Any], user: Any, tenant_id: int, field: str = "agent"
) -> QuerySet[Any]:
    """``queryset`` without rows of agents ``user`` may not see (``field`` names the agent)."""
    visible = visible_agents(user, tenant_id)
    if visible is None:
        return queryset
    return queryset.filter(**{f"{field}__in": visible.values("pk")})


# --- tool permissions ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToolGrant:
    tool: str
    role: str  # "" = every role
    level: str


def _rank(level: str) -> int:
    return LEVELS.index(level)


def _roles_covering(role: str) -> list[str]:
    """The grant rows that apply to ``role``: its own, those of roles below it, and ''."""
    if role not in ROLE_HIERARCHY:
        return []
    return ["", *ROLE_HIERARCHY[: ROLE_HIERARCHY.index(role) + 1]]


def _resolve(grants: Iterable[tuple[str, str, str]], tool: str, role: str) -> str:
    applicable = set(_roles_covering(role))
    if not applicable:
        return ToolPermissionLevel.NONE  # unknown role: deny
    exact = [lvl for t, r, lvl in grants if t == tool and r in applicable]
    fallback = [lvl for t, r, lvl in grants if t == ANY_TOOL and r in applicable]
    chosen = exact or fallback  # a tool's own rows override the agent's default
    granted = max(chosen, key=_rank) if chosen else ToolPermissionLevel.NONE
    return min(granted, ROLE_CEILING[role], key=_rank)


def effective_tool_permissions(agent: Agent, role: str, tools: Iterable[str]) -> dict[str, str]:
    """``{tool: level}`` for ``role`` on ``agent``'s tools, in one query (tool registry)."""
    names = list(dict.fromkeys(tools))
    with tenant_scope(agent.tenant_id):
        grants = list(
            AgentToolPermission.objects.filter(
                agent=agent, tool__in=[*names, ANY_TOOL]
            ).values_list("tool", "role", "level")
        )
    return {name: _resolve(grants, name, role) for name in names}


def effective_tool_permission(agent: Agent, tool: str, role: str) -> str:
    """none/read/execute/admin: denied unless granted, inherited upwards, capped by role.

    A row for the tool itself wins over the agent's ``*`` default; among the rows that
    apply (the role's own, lower roles', and role-less ones) the highest level counts;
    the role's ceiling (viewer and reviewer read, operator execute, owner admin) caps it.
    """
    return effective_tool_permissions(agent, role, [tool])[tool]


def allows(level: str, needed: str) -> bool:
    """Whether ``level`` includes ``needed`` (``admin`` includes ``execute`` and ``read``)."""
    return _rank(level) >= _rank(needed)


def _validate_grants(grants: Sequence[dict[str, Any]]) -> list[ToolGrant]:
    roles = {"", *ROLE_HIERARCHY}
    seen: set[tuple[str, str]] = set()
    result = []
    for index, grant in enumerate(grants):
        tool, role, level = grant.get("tool", ""), grant.get("role") or "", grant.get("level")
        where = f"permissions[{index}]"
        if tool != ANY_TOOL and not _TOOL_NAME.match(tool):
            raise GovernanceError(
                f"{where}.tool: use letters, digits, _ . : - or '*'", "permissions"
            )
        if role not in roles:
            raise GovernanceError(f"{where}.role: unknown role {role!r}", "permissions")
        if level not in LEVELS:
            raise GovernanceError(f"{where}.level: use one of {', '.join(LEVELS)}", "permissions")
        if (tool, role) in seen:
            raise GovernanceError(
                f"{where}: {tool!r} for role {role or '*'!r} given twice", "permissions"
            )
        seen.add((tool, role))
        result.append(ToolGrant(tool, role, level))
    return result


def tool_grants(agent: Agent) -> list[ToolGrant]:
    """The agent's grants, read inside its tenant's scope."""
    return [
        ToolGrant(row.tool, row.role, row.level)
        for row in AgentToolPermission.objects.filter(agent=agent).order_by("tool", "role")
    ]


def set_tool_permissions(
    *, actor: Actor, agent: Agent, grants: Sequence[dict[str, Any]]
) -> list[ToolGrant]:
    """Replace the agent's tool grants with ``grants`` (``[{tool, role?, level}]``)."""
    validated = _validate_grants(grants)
    with tenant_scope(agent.tenant_id):  # an entry point: the tool registry's tests call it
        before = [asdict(g) for g in tool_grants(agent)]
        with transaction.atomic():
            AgentToolPermission.objects.filter(agent=agent).delete()
            AgentToolPermission.objects.bulk_create(
                AgentToolPermission(agent=agent, tool=g.tool, role=g.role, level=g.level)
                for g in validated
            )
            after = [asdict(g) for g in sorted(validated, key=lambda g: (g.tool, g.role))]
            if after != before:
                append(
                    tenant_id=agent.tenant_id,
                    actor=actor,
                    action="agent.tool_permissions_changed",
                    target_type="agent",
                    target_id=agent.pk,
                    changes={"before": before, "after": after},
                )
        return tool_grants(agent)
