"""Celery entry points of the agents app: thin, idempotent, tenant-scoped (habit 5)."""

from __future__ import annotations

from celery import shared_task

from agentflow import services
from tenants.scoping import scoped_to_tenant


@shared_task(
    name="agentflow.runs.execute",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=0,
)
@scoped_to_tenant
def execute_run_task(tenant_id: int, run_id: str) -> str:
    return services.execute_run(run_id)
