"""Onboarding nudges on a schedule: each stall becomes one ``onboarding.stalled`` event.

The beat task ``maintenance.onboarding_nudges`` calls `record_stalls` every
``ONBOARDING_NUDGE_SECONDS``. For every onboarding_agent of an active tenant,
`stalled_users` lists the users stuck on a step for the agent's ``nudge_after_hours``; each
stall is recorded once as an internal activity event (`learning.services.record_event`),
which the tenant reads at ``GET /api/v1/activity?kind=onboarding.stalled`` (to email or
message the user) and the stream's consumers see like any other event.

A stall is a user on a step since a moment (the step's ``step_started_at``): the event's
dedup key names the agent, the user, the step and that moment, so a second sweep, or two
sweeps at once, record nothing new, while the same user stalling on a later step (or on the
step again after a restart) is a new stall. The user who comes back is also reminded in the
reply (the agent's own nudge); the sweep does not change the journey.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import structlog
from django.db import transaction

from agentflow.blueprints.onboarding import SPEC, StalledUser, stalled_users
from agentflow.models import Agent
from learning.models import ActivityEvent, ActivitySource
from learning.services import record_event
from tenants.context import tenant_scope
from tenants.models import TenantStatus

__all__ = ["NUDGE_KIND", "record_stalls", "stall_key"]

NUDGE_KIND = "onboarding.stalled"
log = structlog.get_logger(__name__)


def stall_key(agent_id: Any, stall: StalledUser) -> str:
    """The event's dedup key: one per (agent, user, step, the moment the step started)."""
    # Hashed: a user id may be 200 characters, the key at most 200.
    identity = f"{stall.user_id}\x00{stall.step}\x00{stall.step_started_at!r}"
    return f"{NUDGE_KIND}:{agent_id}:{hashlib.sha256(identity.encode()).hexdigest()}"


def _payload(agent: Agent, stall: StalledUser, titles: dict[str, str]) -> dict[str, Any]:
    return {
        "agent_id": str(agent.pk),
        "agent_name": agent.name,
        "user_id": stall.user_id,
        "step": stall.step,
        "step_title": titles.get(stall.step, stall.step),
        "step_started_at": datetime.fromtimestamp(stall.step_started_at, UTC).isoformat(),
        "stalled_hours": stall.stalled_hours,
    }


def _record_agent_stalls(agent: Agent, now: datetime) -> int:
    """Record the new stalls of one agent's users (in its tenant); returns how many."""
    with tenant_scope(agent.tenant_id):
        keyed = {stall_key(agent.pk, stall): stall for stall in stalled_users(agent, now=now)}
        if not keyed:
            return 0
        # The dedup key alone keeps it once; this only lets the count say what is new.
        known = set(
            ActivityEvent.objects.filter(
                source=ActivitySource.INTERNAL, dedup_key__in=list(keyed)
            ).values_list("dedup_key", flat=True)
        )
        titles = {
            str(step.get("id")): str(step.get("title"))
            for step in (agent.config or {}).get("steps") or []
            if isinstance(step, dict)
        }
        new = [(key, stall) for key, stall in keyed.items() if key not in known]
        with transaction.atomic():  # published together when they commit
            for key, stall in new:
                record_event(
                    agent.tenant_id,
                    NUDGE_KIND,
                    _payload(agent, stall, titles),
                    occurred_at=now,
                    dedup_key=key,
                )
    if new:
        log.info("onboarding.stalls_recorded", agent_id=str(agent.pk), count=len(new))
    return len(new)


def record_stalls(now: datetime) -> int:
    """Record every onboarding agent's new stalls; returns how many events were recorded."""
    # Every tenant's onboarding agents, knowingly: a platform sweep; each agent enters its
    # tenant's scope.
    agents = Agent.unscoped.filter(
        blueprint=SPEC.name, tenant__status=TenantStatus.ACTIVE
    ).order_by("tenant_id", "id")
    return sum(_record_agent_stalls(agent, now) for agent in agents)
