"""A worker killed with SIGKILL mid-run loses nothing: the run is redelivered and settles once.

The LLM is a real local OpenAI-compatible server that holds the first request open, so the
kill lands while the run is provably inside the pipeline. Workers are real ``celery worker``
processes with a short visibility timeout, the documented redelivery mechanism.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.models import Message, Run, RunStatus, RunTransition
from agentflow.services import create_agent
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion, slow
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.workers import database_url_for_workers, start_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=chat_completion("Open Settings, then Security.")) as server:
        yield server


def test_killed_worker_run_is_redelivered_and_settles_once(
    owner: Persona, llm: FakeOpenAIServer, settings: Any, tmp_path: Path
) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [llm.base_url]}
    config = {
        **SUPPORT_CONFIG,
        "default_threshold": 0.05,
        "llm": {
            "providers": [
                {
                    "kind": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": llm.base_url,
                    "api_key": "${OPENAI_API_KEY}",
                    "timeout_seconds": 60,
                    "max_retries": 0,
                }
            ]
        },
    }
    agent = create_agent(
        actor=ACTOR, tenant=owner.tenant, name="crashy", blueprint="support_agent", config=config
    )
    # The first LLM call of the run hangs long enough for the kill to land inside it.
    llm.enqueue(slow(120))
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_workers(),
        "OPENAI_API_KEY": "sk-test",
        "LLM_ALLOWED_BASE_URLS": llm.base_url,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "workers.log"
    log = log_path.open("ab")
    first = start_worker(env, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        created = owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": "crash-user", "message": "How do I reset my password?"},
            headers={"Prefer": "respond-async"},
        )
        assert created.status_code == 202
        run_id = created.json()["id"]
        wait_until(lambda: len(llm.requests) >= 1, 60, "the first worker to call the LLM")
        with tenant_scope(owner.tenant.pk):
            assert Run.objects.get(pk=run_id).status == RunStatus.PROCESSING

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)

        second = start_worker(env, log)

        def settled() -> bool:
            with tenant_scope(owner.tenant.pk):
                return Run.objects.get(pk=run_id).status not in (
                    RunStatus.PENDING,
                    RunStatus.PROCESSING,
                )

        wait_until(settled, 90, "the redelivered run to settle")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
        log.close()

    with tenant_scope(owner.tenant.pk):
        run = Run.objects.get(pk=run_id)
        assert run.status == RunStatus.COMPLETED, (run.status, log_path.read_text()[-3000:])
        assert Message.objects.filter(run=run, role="assistant").count() == 1
        assert Message.objects.filter(run=run, role="user").count() == 1
        assert RunTransition.objects.filter(run=run, to_status=RunStatus.COMPLETED).count() == 1
    completions = AuditEvent.unscoped.filter(
        tenant=owner.tenant, action="run.completed", target_id=str(run_id)
    )
    assert completions.count() == 1
    # The run really was processed twice: once by the killed worker, once after redelivery.
    assert len(llm.requests) >= 2
