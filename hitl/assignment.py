"""Fair assignment: the least-loaded available member with the required role (or higher).

A reviewer's capacity holds under concurrency because :func:`assign` locks the
reviewer's availability row and re-counts their load under it, in a statement that
starts after the lock: two requests queued at once cannot both take a reviewer's last
free slot, and only assignments to the same reviewer wait for each other.

The tenant's assignment lock (an advisory lock) is taken shared by a new request
(:func:`enter_queue`: escalations never wait for each other) and exclusive by whatever
frees a slot or a reviewer (decisions, unclaims, availability, the SLA sweep), which
then dispatches waiting requests: whichever of a new request and a freed reviewer comes
second sees the other, so no request waits for a reviewer who is free. Lock order, to
stay deadlock-free: this lock is taken *before* anything that appends to the audit chain
(whose own advisory lock comes second) in the same transaction; every service here
takes it first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, models
from django.db.models import Count, Subquery, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThan

from governance.audit import Actor
from hitl import events
from hitl.models import (
    OPEN_STATUSES,
    EscalationPolicy,
    HITLRequest,
    ReviewerAvailability,
    ReviewSettings,
    Status,
)
from hitl.policy import roles_at_or_above
from tenants.models import Tenant
from tenants.scoping import require_tenant_id

_ASSIGNMENT_LOCK = 7_362  # advisory-lock class of HITL assignment (audit uses 7_361)
DISPATCH_BATCH = 50
M = TypeVar("M", bound=models.Model)


def lock_assignments(tenant_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ASSIGNMENT_LOCK, tenant_id])


@dataclass(frozen=True)
class QueueEntry:
    """What queueing a request reads with the lock: the tier, review settings, policies."""

    tier: str
    settings: list[ReviewSettings]  # the tenant's and the agent's, if any
    policies: list[EscalationPolicy]  # the enabled ones, in the order they are tried


_ENTER_QUEUE_SQL = """
SELECT tenant.tier,
    (SELECT COALESCE(json_agg(s), '[]') FROM hitl_reviewsettings AS s
        WHERE s.tenant_id = %(tenant)s AND (s.agent_id = %(agent)s OR s.agent_id IS NULL)),
    (SELECT COALESCE(json_agg(p ORDER BY p.position, p.id), '[]')
        FROM hitl_escalationpolicy AS p
        WHERE p.tenant_id = %(tenant)s AND p.enabled)
FROM pg_advisory_xact_lock_shared(%(lock)s, %(tenant)s) AS lock, tenants_tenant AS tenant
WHERE tenant.id = %(tenant)s
"""


def enter_queue(tenant_id: int, agent_id: Any) -> QueueEntry:
    """Take the tenant's assignment lock shared, and read what the request's review
    settings and policy come from (tier, settings rows, enabled policies): one statement.

    Shared: requests being queued proceed side by side; each waits only for an exclusive
    holder (a decision, an availability change...) to commit, and its next statements see
    what that one freed. The reads here may predate that holder's commit: none of them
    changes settings, policies or tiers.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _ENTER_QUEUE_SQL, {"lock": _ASSIGNMENT_LOCK, "tenant": tenant_id, "agent": agent_id}
        )
        row = cursor.fetchone()
    if row is None:
        raise Tenant.DoesNotExist(f"tenant {tenant_id} not found")
    tier, settings, policies = row
    return QueueEntry(
        tier=str(tier),
        settings=rows_of(ReviewSettings, settings),
        policies=rows_of(EscalationPolicy, policies),
    )


def rows_of(model: type[M], rows: str | list[dict[str, Any]]) -> list[M]:
    """Model instances from ``json_agg`` rows (JSON text, or already decoded)."""
    decoded = json.loads(rows) if isinstance(rows, str) else rows
    fields = model._meta.concrete_fields
    names = [field.attname for field in fields]
    return [
        model.from_db(DEFAULT_DB_ALIAS, names, [f.to_python(row[str(f.column)]) for f in fields])
        for row in decoded
    ]


# One constant statement: the queryset it replaces (members subquery, load annotation
# ordered by name) cost ~2 ms of ORM compilation per escalated run on the run worker,
# more than the query itself (issue 15). Same rows, same order, same tenant filter.
_PICK_REVIEWER_SQL = """
SELECT a.user_id
FROM hitl_revieweravailability AS a
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM hitl_hitlrequest AS r
    WHERE r.tenant_id = %(tenant)s AND r.assignee_id = a.user_id AND r.status = ANY(%(open)s)
) AS held
WHERE a.tenant_id = %(tenant)s AND a.available AND held.n < a.capacity
    AND NOT (a.user_id = ANY(%(exclude)s::bigint[]))
    AND a.user_id IN (
        SELECT m.user_id FROM tenants_membership AS m
        WHERE m.tenant_id = %(tenant)s AND m.role = ANY(%(roles)s)
    )
ORDER BY held.n, a.last_assigned_at ASC NULLS FIRST, a.user_id
LIMIT 1
"""


def pick_reviewer(required_role: str, *, exclude: Iterable[int] = ()) -> int | None:
    """The user to assign next for ``required_role``, or None when everyone is away or full:
    the least-loaded available member with the role or higher, longest unassigned first."""
    params: dict[str, Any] = {
        "tenant": require_tenant_id(),
        "open": list(OPEN_STATUSES),
        "exclude": list(exclude),
        "roles": roles_at_or_above(required_role),
    }
    with connection.cursor() as cursor:
        cursor.execute(_PICK_REVIEWER_SQL, params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _load_below(user_id: int, capacity: int) -> GreaterThan:
    held = (
        HITLRequest.objects.filter(assignee_id=user_id, status__in=OPEN_STATUSES)
        .order_by()
        .values("assignee_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return GreaterThan(Value(capacity), Coalesce(Subquery(held), Value(0)))


def assign(
    request: HITLRequest, user_id: int, *, actor: Actor, now: datetime
) -> HITLRequest | None:
    """Give an unassigned open request to ``user_id`` if they still have room (compare-and-set).

    The reviewer's availability row is locked first; the compare-and-set then counts
    their load in a statement of its own, which sees every assignment committed by
    whoever held the lock before. The assigned request, or None.
    """
    capacity = (
        ReviewerAvailability.objects.select_for_update(no_key=True)
        .filter(user_id=user_id, available=True)
        .values_list("capacity", flat=True)
        .first()
    )
    if capacity is None:
        return None  # went away meanwhile
    won = HITLRequest.objects.filter(
        _load_below(user_id, capacity),
        pk=request.pk,
        status__in=(Status.PENDING, Status.ESCALATED),
        assignee__isnull=True,
    ).update(status=Status.ASSIGNED, assignee_id=user_id, assigned_at=now)
    if not won:
        return None
    ReviewerAvailability.objects.filter(user_id=user_id).update(last_assigned_at=now)
    assigned = events.reload(request.pk)
    events.record(
        assigned,
        "assigned",
        actor=actor,
        at=now,
        detail={"assignee_id": user_id, "required_role": assigned.required_role},
        live="assigned",
    )
    return assigned


# A reviewer picked as free may be full by the time their row is locked (another request
# took the slot): try the next one, a few times.
_ASSIGN_ATTEMPTS = 3


def auto_assign(
    request: HITLRequest, *, actor: Actor, now: datetime, exclude: Iterable[int] = ()
) -> HITLRequest | None:
    """Assign ``request`` to the least-loaded reviewer with room; the assigned request."""
    skipped = list(exclude)
    for _ in range(_ASSIGN_ATTEMPTS):
        user_id = pick_reviewer(request.required_role, exclude=skipped)
        if user_id is None:
            return None
        assigned = assign(request, user_id, actor=actor, now=now)
        if assigned is not None:
            return assigned
        skipped.append(user_id)
    return None


def dispatch(*, actor: Actor, now: datetime) -> int:
    """Hand unassigned open requests, most urgent first, to whoever has room. Lock held."""
    waiting = HITLRequest.objects.filter(
        status__in=(Status.PENDING, Status.ESCALATED), assignee__isnull=True
    ).order_by("-priority_rank", "sla_deadline", "created_at")[:DISPATCH_BATCH]
    full_roles: set[str] = set()
    assigned = 0
    for request in waiting:
        if request.required_role in full_roles:
            continue
        if auto_assign(request, actor=actor, now=now) is not None:
            assigned += 1
        else:
            full_roles.add(request.required_role)
    return assigned
