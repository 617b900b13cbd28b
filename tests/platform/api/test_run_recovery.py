"""Runs are never lost: a lease keeps duplicates off a live run, a sweep revives lost ones."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection

from agentflow.models import Message, Run, RunStatus, Step
from agentflow.services import _RUN_LEASE, execute_run, recover_stuck_runs
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def _accepted(owner: Persona, agent: Any, message: str) -> str:
    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "recovery-user", "message": message},
        headers={"Prefer": "respond-async"},
    )
    assert created.status_code == 202
    return str(created.json()["id"])


def _other_connection() -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], autocommit=True)


def _lease_held(run_id: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = hashtext(%s)::oid",
            [_RUN_LEASE, run_id],
        )
        return bool(cursor.fetchone()[0])


def test_a_run_leased_by_a_live_worker_is_left_alone(owner: Persona, agent: Any) -> None:
    run_id = _accepted(owner, agent, "How do I reset my password?")
    with _other_connection() as live_worker:
        live_worker.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_RUN_LEASE, run_id])
        with tenant_scope(owner.tenant.pk):
            assert execute_run(run_id) == "busy"
            assert Run.objects.get(pk=run_id).status == RunStatus.PENDING
    # The live worker's connection is gone (as when it dies); its backend exits a moment
    # later and the lease is free again.
    deadline = time.monotonic() + 10
    while _lease_held(run_id):
        assert time.monotonic() < deadline, "the dead worker's lease was never released"
        time.sleep(0.02)
    with tenant_scope(owner.tenant.pk):
        assert execute_run(run_id) == RunStatus.COMPLETED
        assert Message.objects.filter(run_id=run_id, role="assistant").count() == 1


def test_the_sweep_re_enqueues_runs_whose_task_was_lost(
    owner: Persona, agent: Any, celery_worker_app: object, settings: Any
) -> None:
    lost_pending = _accepted(owner, agent, "How do I reset my password?")
    lost_processing = _accepted(owner, agent, "How do I request a refund?")
    fresh = _accepted(owner, agent, "How do I reset my password please?")
    now = datetime.now(UTC)
    with tenant_scope(owner.tenant.pk):
        deadline = time.monotonic() + 30
        while Run.objects.filter(pk=fresh).exclude(status=RunStatus.COMPLETED).exists():
            assert time.monotonic() < deadline, "the worker never ran the fresh run"
            time.sleep(0.05)
        # Simulate lost tasks: one run still pending long after it was accepted, one left
        # processing by a worker that vanished (no lease held).
        Run.objects.filter(pk=lost_pending).update(
            status=RunStatus.PENDING, created_at=now - timedelta(minutes=10), started_at=None
        )
        Run.objects.filter(pk=lost_processing).update(
            status=RunStatus.PROCESSING, started_at=now - timedelta(hours=1), result=None
        )
        # Lost before completion: nothing of their settlement exists yet.
        Message.objects.filter(run_id__in=[lost_pending, lost_processing]).delete()
        Step.objects.filter(run_id__in=[lost_pending, lost_processing]).delete()

    assert recover_stuck_runs(now) == 2

    with tenant_scope(owner.tenant.pk):
        deadline = time.monotonic() + 30
        while (
            Run.objects.filter(pk__in=[lost_pending, lost_processing])
            .exclude(status=RunStatus.COMPLETED)
            .exists()
        ):
            assert time.monotonic() < deadline, "recovered runs did not complete"
            time.sleep(0.05)
        for run_id in (lost_pending, lost_processing):
            assert Message.objects.filter(run_id=run_id, role="assistant").count() == 1
    assert recover_stuck_runs(now + timedelta(hours=2)) == 0  # nothing left to recover


def test_a_processing_run_without_a_lease_is_recovered_at_once_and_backs_off(
    owner: Persona, agent: Any, settings: Any
) -> None:
    """A dead worker's run is seen on the next sweep, not after a 15-minute timeout."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_RECOVERY_BACKOFF_SECONDS": 30.0}
    orphaned = _accepted(owner, agent, "How do I reset my password?")
    leased = _accepted(owner, agent, "How do I request a refund?")
    now = datetime.now(UTC)
    with tenant_scope(owner.tenant.pk):
        # Both started a second ago; only one still has a live worker holding its lease.
        Run.objects.filter(pk__in=[orphaned, leased]).update(
            status=RunStatus.PROCESSING, started_at=now - timedelta(seconds=1)
        )
    with _other_connection() as live_worker:
        live_worker.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [_RUN_LEASE, leased])
        assert recover_stuck_runs(now) == 1
        with tenant_scope(owner.tenant.pk):
            recovered = Run.objects.get(pk=orphaned)
            assert recovered.recovery_attempts == 1
            assert Run.objects.get(pk=leased).recovery_attempts == 0
        # Its task is queued again; the next sweeps leave it alone until the backoff ends,
        # then send one more copy, and wait twice as long after that.
        assert recover_stuck_runs(now + timedelta(seconds=15)) == 0
        assert recover_stuck_runs(now + timedelta(seconds=31)) == 1
        assert recover_stuck_runs(now + timedelta(seconds=60)) == 0
        assert recover_stuck_runs(now + timedelta(seconds=92)) == 1
