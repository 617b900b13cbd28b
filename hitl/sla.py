"""The SLA sweep: breaches, escalations up the role chain, expiry (SPEC 6).

Celery beat calls :func:`sweep` with the real time every ``HITL_SLA_SWEEP_SECONDS``
(30 s by default), so a breach is marked at most that long after its deadline; tests
pass their own ``now``. Each open request carries ``next_check_at``, the next moment
anything about it is due; the sweep reads the due ones across tenants and handles each
in its own transaction under a row lock, re-checking that it is still due. Two sweeps
at once, or one repeated, therefore handle every event exactly once, and so send every
notification once.

On a breach the request is marked (``breached_at``, the first time), the policy's
``on_breach`` applies (``escalate``: the next role of the chain gets it, with a fresh
window, reassigned to its least-loaded available member; ``notify``: only the
notification) and the role that must act now is notified. At ``expires_at`` the
policy's ``on_expiry`` applies: ``auto_reject`` closes it as ``expired`` and delivers
the hand-off, ``escalate`` hands it to the top of the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import structlog
from django.db import transaction

from agentflow.models import RunStatus
from hitl import assignment, events, tasks
from hitl.models import OPEN_STATUSES, Decision, EscalationPolicy, HITLRequest, Status
from hitl.policy import ROLE_RANK, escalation_window, policy_of, review_config
from hitl.services import SYSTEM
from tenants.context import tenant_scope
from tenants.models import Membership, Tenant

log = structlog.get_logger(__name__)
SWEEP_BATCH = 500


@dataclass
class SweepReport:
    due: int = 0
    breached: int = 0
    escalated: int = 0
    expired: int = 0
    closed_cancelled: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# How the run-orchestration layer (agentflow.orchestration) takes over an expiry without
# HITL importing the layers above it, both inside the expiry's transaction: ``Deliver``
# resumes the run with the rejection (request, decision, reason; False when the run no
# longer waits), ``OnExpired`` records what follows (the request, whether it resumed).
Deliver = Callable[[HITLRequest, str, str], bool]
OnExpired = Callable[[HITLRequest, bool], None]


def sweep(
    now: datetime,
    *,
    deliver: Deliver,
    batch: int = SWEEP_BATCH,
    on_expired: OnExpired | None = None,
) -> SweepReport:
    report = SweepReport()
    # The sweep serves every tenant: this read of due ids is a deliberate cross-tenant
    # bypass; each request is then handled inside its own tenant's scope.
    due = list(
        HITLRequest.unscoped.filter(next_check_at__lte=now, status__in=OPEN_STATUSES)
        .order_by("next_check_at")
        .values_list("pk", "tenant_id")[:batch]
    )
    report.due = len(due)
    for request_id, tenant_id in due:
        with tenant_scope(tenant_id):
            outcome = handle_due(request_id, now, deliver=deliver, on_expired=on_expired)
        for name in outcome:
            setattr(report, name, getattr(report, name) + 1)
    cancelled = list(
        HITLRequest.unscoped.filter(
            status__in=OPEN_STATUSES, run__status=RunStatus.CANCELLED
        ).values_list("pk", "tenant_id")[:batch]
    )
    for request_id, tenant_id in cancelled:
        with tenant_scope(tenant_id):
            if close_cancelled(request_id, now):
                report.closed_cancelled += 1
    if report.due or report.closed_cancelled:
        log.info("hitl.sla_sweep", **report.as_dict())
    return report


def _next_check(request: HITLRequest) -> datetime | None:
    if request.status not in OPEN_STATUSES:
        return None
    timers = [request.expires_at]
    if not request.deadline_breached:
        timers.append(request.sla_deadline)
    pending = [t for t in timers if t is not None]
    return min(pending) if pending else None


def handle_due(
    request_id: Any, now: datetime, *, deliver: Deliver, on_expired: OnExpired | None = None
) -> list[str]:
    """Apply whatever is due on one request; the names of what happened."""
    happened: list[str] = []
    with transaction.atomic():
        request = HITLRequest.objects.filter(pk=request_id).first()
        if request is None:
            return ["skipped"]
        assignment.lock_assignments(request.tenant_id)
        request = (
            HITLRequest.objects.select_for_update()
            .filter(pk=request_id, status__in=OPEN_STATUSES, next_check_at__lte=now)
            .first()
        )
        if request is None:
            return ["skipped"]  # another sweep handled it, or someone decided meanwhile
        policy = policy_of(request.policy)
        tier = Tenant.objects.values_list("tier", flat=True).get(pk=request.tenant_id)
        config = review_config(tier=tier, agent_id=request.context.get("agent_id"))
        if not request.deadline_breached and request.sla_deadline <= now:
            happened += _breach(request, policy, config, now)
        if request.is_open and request.expires_at is not None and request.expires_at <= now:
            happened += _expire(request, policy, config, now, deliver, on_expired)
        if request.is_open:
            request.next_check_at = _next_check(request)
            request.save(update_fields=["next_check_at", "updated_at"])
    return happened


def _breach(
    request: HITLRequest, policy: EscalationPolicy, config: Any, now: datetime
) -> list[str]:
    request.deadline_breached = True
    request.breached_at = request.breached_at or now
    request.save(update_fields=["deadline_breached", "breached_at", "updated_at"])
    breached = events.reload(request.pk)
    events.record(
        breached,
        "breached",
        actor=SYSTEM,
        at=now,
        detail={
            "sla_deadline": request.sla_deadline.isoformat(),
            "level": request.escalation_level,
            "required_role": request.required_role,
        },
        live="breached",
    )
    previous = request.assignee_id
    chain = list(policy.chain)
    if policy.on_breach == "escalate" and request.escalation_level + 1 < len(chain):
        _move_up(request, chain, request.escalation_level + 1, config, policy, now, "sla_breach")
        tasks.notify_on_commit(
            request, "escalated", role=request.required_role, previous_assignee=previous
        )
        return ["breached", "escalated"]
    tasks.notify_on_commit(
        request, "breached", role=request.required_role, previous_assignee=previous
    )
    return ["breached"]


def _move_up(
    request: HITLRequest,
    chain: list[str],
    level: int,
    config: Any,
    policy: EscalationPolicy,
    now: datetime,
    why: str,
) -> None:
    """Hand the request to ``chain[level]`` with a fresh window; reassign if needed."""
    previous = request.assignee_id
    role = chain[level]
    request.escalation_level = level
    request.required_role = role
    request.sla_deadline = now + escalation_window(policy, config, request.priority)
    request.deadline_breached = False
    keeps = previous is not None and _holds_role(previous, role)
    if not keeps:
        request.assignee_id = None
        request.assigned_at = None
    request.status = Status.ASSIGNED if keeps else Status.ESCALATED
    request.save()
    escalated = events.reload(request.pk)
    events.record(
        escalated,
        "escalated",
        actor=SYSTEM,
        at=now,
        detail={"why": why, "level": level, "required_role": role, "previous_assignee": previous},
        live="escalated",
    )
    if not keeps:
        exclude = [previous] if previous else []
        assignment.auto_assign(escalated, actor=SYSTEM, now=now, exclude=exclude)
    request.refresh_from_db()


def _holds_role(user_id: int, role: str) -> bool:
    held = Membership.objects.filter(user_id=user_id).values_list("role", flat=True).first()
    return held is not None and ROLE_RANK.get(held, 0) >= ROLE_RANK[role]


def _expire(
    request: HITLRequest,
    policy: EscalationPolicy,
    config: Any,
    now: datetime,
    deliver: Deliver,
    on_expired: OnExpired | None = None,
) -> list[str]:
    previous = request.assignee_id
    if policy.on_expiry == "escalate":
        chain = list(policy.chain)
        top = len(chain) - 1
        request.expires_at = None  # expiry happened; the top of the chain has it now
        request.save(update_fields=["expires_at", "updated_at"])
        if request.escalation_level < top:
            _move_up(request, chain, top, config, policy, now, "expired")
        tasks.notify_on_commit(
            request, "expired", role=request.required_role, previous_assignee=previous
        )
        return ["escalated"]
    reason = f"No decision before {request.expires_at.isoformat() if request.expires_at else now}."
    HITLRequest.objects.filter(pk=request.pk).update(
        status=Status.EXPIRED,
        decision=Decision.REJECT,
        reason=reason,
        decided_at=now,
        next_check_at=None,
    )
    expired = events.reload(request.pk)
    delivered = deliver(expired, Decision.REJECT, reason)
    events.record(
        expired,
        "expired",
        actor=SYSTEM,
        at=now,
        detail={"reason": reason, "delivered": delivered},
        live="decided",
    )
    if on_expired is not None:
        on_expired(expired, delivered)
    tasks.notify_on_commit(
        expired, "expired", role=expired.required_role, previous_assignee=previous
    )
    request.status = Status.EXPIRED
    assignment.dispatch(actor=SYSTEM, now=now)
    return ["expired"]


def close_cancelled(request_id: Any, now: datetime) -> bool:
    """Close the open request of a run its client cancelled: nothing is left to decide."""
    with transaction.atomic():
        request = HITLRequest.objects.filter(pk=request_id).first()
        if request is None:
            return False
        assignment.lock_assignments(request.tenant_id)
        won = HITLRequest.objects.filter(
            pk=request_id, status__in=OPEN_STATUSES, run__status=RunStatus.CANCELLED
        ).update(
            status=Status.EXPIRED,
            reason="The run was cancelled.",
            decided_at=now,
            next_check_at=None,
        )
        if not won:
            return False
        closed = events.reload(request_id)
        events.record(
            closed,
            "expired",
            actor=SYSTEM,
            at=now,
            detail={"reason": "run_cancelled"},
            live="decided",
        )
    return True
