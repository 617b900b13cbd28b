"""Ids made in forked worker processes never collide (issue 13, item 1).

A real prefork worker (two pool processes forked from one parent) runs 60 runs of 12
users. Before the fix every pool process inherited the same id prefix and counter, and
threads and memory cases collided on their primary keys while the runs still said
``completed``. Now every conversation row is kept, every trace id is distinct, and a
store failure fails the run loudly instead of hiding in ``metadata.degraded``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agentflow.models import MemoryCase, Run, RunStatus, Thread
from agentflow.services import create_agent
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona, make_persona
from tests.platform.workers import database_url_for_workers, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

USERS = [f"customer-{n}" for n in range(12)]
QUESTIONS = [
    "How do I reset my password?",
    "I was charged twice this month",
    "Where is my invoice for March?",
    "the password reset link does not work",
    "I want a refund for my last order",
]
SETTLED = (RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def owner(transactional_db: None) -> Persona:
    # Enough concurrent runs for the burst: this test is about ids, not quotas.
    return make_persona(
        "Forked",
        tier="enterprise",
        quota_overrides={"concurrent_runs": None, "requests_per_minute": None},
    )


def test_a_prefork_pool_keeps_every_conversation_row(owner: Persona, tmp_path: Path) -> None:
    agent = create_agent(
        actor=ACTOR,
        tenant=owner.tenant,
        name="forked",
        blueprint="support_agent",
        config=SUPPORT_CONFIG,
    )
    env = {**os.environ, "DATABASE_URL": database_url_for_workers(), "LOG_LEVEL": "INFO"}
    log_path = tmp_path / "worker.log"
    run_ids: list[str] = []
    pool: set[int] = set()
    with log_path.open("ab") as log:
        worker = start_worker(env, log, pool="prefork", concurrency=2)
        try:
            for question in QUESTIONS:
                for user in USERS:
                    created = owner.post(
                        f"/api/v1/agents/{agent.pk}/runs",
                        {"user_id": user, "message": question},
                        headers={"Prefer": "respond-async"},
                    )
                    assert created.status_code == 202, created.content
                    run_ids.append(created.json()["id"])

            def all_settled() -> bool:
                pool.update(_children(worker.pid))
                with tenant_scope(owner.tenant.pk):
                    active = Run.objects.filter(pk__in=run_ids).exclude(
                        status__in=[*SETTLED, RunStatus.FAILED]
                    )
                    return not active.exists()

            wait_until(all_settled, 240, "60 runs to settle")
        finally:
            stop_worker(worker)
    worker_log = log_path.read_text(errors="replace")
    assert len(pool) >= 2, f"expected a pool of two forked processes, found {pool}"

    with tenant_scope(owner.tenant.pk):
        runs = list(Run.objects.filter(pk__in=run_ids))
        problems: list[Any] = [
            (r.status, r.error, (r.result or {}).get("metadata", {}).get("degraded"))
            for r in runs
            if r.status not in SETTLED or (r.result or {}).get("metadata", {}).get("degraded")
        ]
        assert not problems, (problems[:5], worker_log[-3000:])
        trace_ids = {r.result["metadata"]["trace_id"] for r in runs}
        assert len(trace_ids) == len(runs) == 60
        thread_ids = {r.result["thread_id"] for r in runs}
        kept = set(Thread.objects.filter(pk__in=thread_ids).values_list("pk", flat=True))
        assert kept == thread_ids, "a run names a thread the database does not have"
        cases = MemoryCase.objects.filter(agent=agent)
        remembered = sum(1 for r in runs if r.result["transition"] != "resolution")
        assert cases.count() == remembered
        assert cases.values("user_id").distinct().count() == len(USERS)
