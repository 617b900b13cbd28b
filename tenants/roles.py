"""The one role table, and the one definition of a platform admin (SPEC 8).

The API's scope checks (``tenants.views_base``), the review queue's ladder
(``hitl.policy``), tool-permission ceilings (``governance.services``), the dashboard's
pages (``frontend.access``) and the live socket (``frontend.consumers``) all read
:data:`ROLES`; none keeps a table of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenants.models import Role

READ, WRITE, REVIEW, ADMIN = "read", "write", "review", "admin"
# A Django staff user (superusers included): every scope in every tenant, acting as an owner.
PLATFORM_ADMIN = "platform_admin"


@dataclass(frozen=True)
class RoleGrant:
    """What one role may do."""

    # The ladder: a grant to a role is a grant to every role above it.
    rank: int
    # API scopes; the dashboard and the review queue ask the same question of them.
    scopes: frozenset[str]
    # Reads agents, knowledge and the audit trail in the dashboard (reviewers work the
    # queue only, although their ``read`` scope lets them read those through the API).
    browses: bool
    # The most the role may ever do with an agent's tool (a ToolPermissionLevel value).
    tool_ceiling: str


_OWNER_SCOPES = frozenset({READ, WRITE, REVIEW, ADMIN})
ROLES: dict[str, RoleGrant] = {
    Role.VIEWER: RoleGrant(0, frozenset({READ}), browses=True, tool_ceiling="read"),
    Role.REVIEWER: RoleGrant(1, frozenset({READ, REVIEW}), browses=False, tool_ceiling="read"),
    Role.OPERATOR: RoleGrant(
        2, frozenset({READ, WRITE, REVIEW}), browses=True, tool_ceiling="execute"
    ),
    Role.OWNER: RoleGrant(3, _OWNER_SCOPES, browses=True, tool_ceiling="admin"),
    PLATFORM_ADMIN: RoleGrant(4, _OWNER_SCOPES, browses=True, tool_ceiling="admin"),
}
MEMBER_ROLES: tuple[str, ...] = tuple(Role.values)  # what a tenant membership may hold


def is_platform_admin(user: Any) -> bool:
    """Whether ``user`` is a platform admin: a Django staff user (superusers included).

    The API contract (docs/api.md) names staff users, and ``/api/v1/tenants`` has always
    let them in; a superuser without the staff flag counts too, as it did in the API.
    """
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    # API keys' principals carry neither flag.
    return bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))


def by_rank(roles: list[str] | tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
    """``roles`` lowest first."""
    return tuple(sorted(roles, key=lambda role: ROLES[role].rank))


def roles_with(scope: str) -> frozenset[str]:
    """Every role (platform admin included) whose grant holds ``scope``."""
    return frozenset(role for role, grant in ROLES.items() if scope in grant.scopes)


def browsing_roles() -> frozenset[str]:
    return frozenset(role for role, grant in ROLES.items() if grant.browses)


def member_review_ranks() -> dict[str, int]:
    """The review ladder of members (lowest first): the roles that may decide reviews."""
    reviewers = [role for role in MEMBER_ROLES if REVIEW in ROLES[role].scopes]
    return {role: ROLES[role].rank for role in by_rank(reviewers)}
