"""A worker killed with SIGKILL mid-run loses nothing: the run is redelivered and settles once.

The LLM is a real local OpenAI-compatible server that holds the first request open, so the
kill lands while the run is provably inside the pipeline. Workers are real ``celery worker``
processes with a short visibility timeout, the documented redelivery mechanism.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from django.db import connection

from agentflow.models import Message, Run, RunStatus, RunTransition
from agentflow.services import create_agent
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion, slow
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]


def _test_database_url() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}:@/{db['NAME']}?host={db['HOST']}"


def _start_worker(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "agentflow.server.celery",
            "worker",
            "--pool",
            "solo",
            "--queues",
            "runs,default",
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=chat_completion("Open Settings, then Security.")) as server:
        yield server


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
        "DATABASE_URL": _test_database_url(),
        "OPENAI_API_KEY": "sk-test",
        "LLM_ALLOWED_BASE_URLS": llm.base_url,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "workers.log"
    log = log_path.open("ab")
    first = _start_worker(env, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        created = owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": "crash-user", "message": "How do I reset my password?"},
            headers={"Prefer": "respond-async"},
        )
        assert created.status_code == 202
        run_id = created.json()["id"]
        _wait(lambda: len(llm.requests) >= 1, 60, "the first worker to call the LLM")
        with tenant_scope(owner.tenant.pk):
            assert Run.objects.get(pk=run_id).status == RunStatus.PROCESSING

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)

        second = _start_worker(env, log)

        def settled() -> bool:
            with tenant_scope(owner.tenant.pk):
                return Run.objects.get(pk=run_id).status not in (
                    RunStatus.PENDING,
                    RunStatus.PROCESSING,
                )

        _wait(settled, 90, "the redelivered run to settle")
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
    completions = AuditEvent.objects.filter(
        tenant=owner.tenant, action="run.completed", target_id=str(run_id)
    )
    assert completions.count() == 1
    # The run really was processed twice: once by the killed worker, once after redelivery.
    assert len(llm.requests) >= 2
