"""Fair assignment: the least-loaded available member with the required role (or higher).

Assignments of one tenant are serialised by a transaction-scoped advisory lock, so two
requests queued at once cannot both take a reviewer's last free slot. Lock order, to
stay deadlock-free: this lock is taken *before* anything that appends to the audit
chain (whose own advisory lock comes second) in the same transaction; every service
here takes it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from governance.audit import Actor
from hitl import events
from hitl.models import OPEN_STATUSES, HITLRequest, ReviewerAvailability, Status
from hitl.policy import roles_at_or_above
from tenants.models import Membership

_ASSIGNMENT_LOCK = 7_362  # advisory-lock class of HITL assignment (audit uses 7_361)
DISPATCH_BATCH = 50


def lock_assignments(tenant_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ASSIGNMENT_LOCK, tenant_id])


def open_load() -> Any:
    """Subquery: how many open requests the row's user holds."""
    held = (
        HITLRequest.objects.filter(assignee_id=OuterRef("user_id"), status__in=OPEN_STATUSES)
        .order_by()
        .values("assignee_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(held, output_field=IntegerField()), Value(0))


def pick_reviewer(required_role: str, *, exclude: Iterable[int] = ()) -> int | None:
    """The user to assign next for ``required_role``, or None when everyone is away or full."""
    members = Membership.objects.filter(role__in=roles_at_or_above(required_role)).values("user_id")
    candidate = (
        ReviewerAvailability.objects.filter(available=True, user_id__in=members)
        .exclude(user_id__in=list(exclude))
        .annotate(load=open_load())
        .filter(load__lt=F("capacity"))
        .order_by("load", F("last_assigned_at").asc(nulls_first=True), "user_id")
        .values_list("user_id", flat=True)
        .first()
    )
    return candidate


def assign(request: HITLRequest, user_id: int, *, actor: Actor, now: datetime) -> bool:
    """Give an unassigned open request to ``user_id`` (compare-and-set)."""
    won = HITLRequest.objects.filter(
        pk=request.pk, status__in=(Status.PENDING, Status.ESCALATED), assignee__isnull=True
    ).update(status=Status.ASSIGNED, assignee_id=user_id, assigned_at=now)
    if not won:
        return False
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
    return True


def auto_assign(
    request: HITLRequest, *, actor: Actor, now: datetime, exclude: Iterable[int] = ()
) -> bool:
    user_id = pick_reviewer(request.required_role, exclude=exclude)
    return user_id is not None and assign(request, user_id, actor=actor, now=now)


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
        if auto_assign(request, actor=actor, now=now):
            assigned += 1
        else:
            full_roles.add(request.required_role)
    return assigned
