"""Celery entry points of the agents app: thin, idempotent, tenant-scoped (habit 5)."""

from __future__ import annotations

from datetime import UTC, datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError

from agentflow import orchestration, services
from agentflow.blueprints import compliance_schedule, onboarding_nudges
from tenants.scoping import scoped_to_tenant

# Transient database faults (a deadlock victim, a dropped connection, a full pool) are
# retried with backoff: execute_run is idempotent, so a retry can only finish the run.
_TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name=services.EXECUTE_RUN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
@scoped_to_tenant
def execute_run_task(tenant_id: int, run_id: str) -> str:
    return services.execute_run(run_id)


@shared_task(name="maintenance.recover_runs", ignore_result=True)
def recover_runs_task() -> int:
    """Beat: re-enqueue runs whose task was lost (broker down at enqueue, retries spent)."""
    return services.recover_stuck_runs()


@shared_task(name="hitl.sla_sweep", acks_late=True, ignore_result=True, max_retries=0)
def sla_sweep_task() -> dict[str, int]:
    # Named under hitl (routed to its queue), defined here: an expiry resumes the run and is
    # recorded by the orchestrator (activity), like a reviewer's decision.
    return orchestration.expire_overdue_reviews(datetime.now(UTC)).as_dict()


@shared_task(
    name="learning.review_outcome_sweep", acks_late=True, ignore_result=True, max_retries=0
)
def review_outcome_sweep_task() -> int:
    """Beat: golden paths of decisions whose learning task was lost (broker down at commit).
    Named under learning (its queue), defined here: the orchestrator reads HITL and learning."""
    return orchestration.resend_lost_review_outcomes(datetime.now(UTC))


@shared_task(name="maintenance.compliance_audits", ignore_result=True, max_retries=0)
def compliance_audits_task() -> int:
    """Beat: start the due period audit of each scheduled compliance_auditor_agent."""
    return compliance_schedule.start_due_audits(datetime.now(UTC))


@shared_task(name="maintenance.onboarding_nudges", ignore_result=True, max_retries=0)
def onboarding_nudges_task() -> int:
    """Beat: record each new onboarding stall once (an ``onboarding.stalled`` event)."""
    return onboarding_nudges.record_stalls(datetime.now(UTC))


@shared_task(
    name=orchestration.EXECUTE_TOOL_CALL_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=_TRANSIENT,
    retry_backoff=1,
    retry_backoff_max=60,
    max_retries=8,
)
@scoped_to_tenant
def execute_tool_call_task(tenant_id: int, call_id: str) -> str:
    """An approved tool call, executed once (the call's claim decides who runs it)."""
    return orchestration.execute_approved_tool_call(call_id)


@shared_task(name="maintenance.recover_tool_calls", ignore_result=True)
def recover_tool_calls_task() -> int:
    """Beat: re-send approved tool calls whose task was lost."""
    return orchestration.recover_tool_calls()
