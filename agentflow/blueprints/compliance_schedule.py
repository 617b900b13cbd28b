"""Scheduled compliance audits: the beat starts each due period audit once.

A compliance_auditor_agent whose config says ``schedule: daily`` (or ``weekly``) audits
the last complete UTC day (or Monday-to-Monday week) with an ordinary run, as if someone
had posted ``metadata.audit`` for that period: same queue, review, audit and report. The
beat task ``maintenance.compliance_audits`` calls `start_due_audits` every
``COMPLIANCE_AUDIT_SECONDS``; a period already audited by a scheduled run is skipped, so
ticks may come as often as wanted and a missed tick is made up by the next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from agentflow.blueprints.compliance_auditor import SPEC
from agentflow.core.api.exceptions import ContractError
from agentflow.models import Agent, Run
from agentflow.services import RunRequest, start_run
from governance.audit import Actor
from tenants.context import tenant_scope
from tenants.models import TenantStatus

__all__ = ["SCHEDULE_USER", "last_period", "start_due_audits"]

SCHEDULE_USER = "compliance-schedule"  # the runs' user_id: one session per auditor
_ACTOR = Actor.system("compliance_schedule")
log = structlog.get_logger(__name__)


def last_period(schedule: str, now: datetime) -> tuple[datetime, datetime]:
    """The last complete period of a schedule before `now` (aware, UTC boundaries)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if schedule == "daily":
        return midnight - timedelta(days=1), midnight
    monday = midnight - timedelta(days=midnight.weekday())
    return monday - timedelta(days=7), monday


def _audit_once(agent: Agent, now: datetime) -> bool:
    since, until = last_period(agent.config["schedule"], now)
    period = {"since": since.isoformat(), "until": until.isoformat()}
    with tenant_scope(agent.tenant_id):
        done = Run.objects.filter(
            agent=agent, user_id=SCHEDULE_USER, metadata__audit__since=period["since"]
        ).exists()
    if done:
        return False
    request = RunRequest(
        user_id=SCHEDULE_USER,
        message=f"scheduled {agent.config['schedule']} compliance audit",
        priority="low",
        metadata={"audit": period, "scheduled": True},
    )
    try:
        start_run(actor=_ACTOR, agent=agent, request=request)
    except ContractError as exc:  # a quota: this tenant's audit waits for the next tick
        log.warning("compliance.audit_deferred", agent_id=str(agent.pk), reason=str(exc))
        return False
    return True


def start_due_audits(now: datetime) -> int:
    """Start the due period audit of every scheduled auditor; returns how many started."""
    # Every tenant's auditors, knowingly: a platform sweep; each start enters its tenant.
    scheduled = (
        Agent.unscoped.filter(
            blueprint=SPEC.name,
            config__schedule__in=("daily", "weekly"),
            tenant__status=TenantStatus.ACTIVE,
        )
        .select_related("tenant")
        .order_by("tenant_id", "id")
    )
    return sum(_audit_once(agent, now) for agent in scheduled)
