"""One run worker holds a hundred runs in flight on a slow LLM, and a kill -9 loses none.

Issue 15: runs used to execute one per prefork process, so a worker had two in flight and a
2-second LLM capped a box at 0.46 runs/s. The run worker is now a threads pool whose threads
only wait while their runs are coroutines on one event loop per process, and the leases of
all its runs live on one connection. This drives a real ``celery worker`` (threads pool, as
``make run`` starts the ``runner``) against a real local OpenAI-compatible server that holds
every chat completion open, then kills the worker with SIGKILL while more
than a hundred runs are inside their LLM call, starts another one and sweeps: every run
settles exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from agentflow import services
from agentflow.models import Run, RunStatus
from agentflow.services import RunRequest, create_agent, start_run
from tenants.context import tenant_scope
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    RecordedRequest,
    ScriptedResponse,
    chat_completion,
    slow,
)
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.workers import database_url_for_workers, start_worker, stop_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
# Runs of one user are serialised by the kernel (a conversation has one order): one
# user per run, so that all of them can be in flight at once.

RUNS = 120
IN_FLIGHT_GOAL = 100
HOLD_SECONDS = 60.0  # how long a chat completion is held before the kill
RELEASED_SECONDS = 0.5  # and after it


class HeldLLM:
    """Holds every chat completion open (HOLD_SECONDS) until released, then answers fast.

    Held calls pile up however slowly a loaded machine brings runs to their LLM call, so
    the kill lands with all of them open; after `release()` the next worker's calls are
    answered in RELEASED_SECONDS.
    """

    def __init__(self, hold_seconds: float = HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self.arrivals: list[float] = []
        self.released = False
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> ScriptedResponse:
        if not request.path.endswith("/chat/completions"):
            return ScriptedResponse(404, {"error": {"message": "no such endpoint"}})
        with self._lock:
            self.arrivals.append(time.monotonic())
            delay = RELEASED_SECONDS if self.released else self.hold_seconds
        return slow(delay, chat_completion("Open Settings, then Security."))

    def release(self) -> None:
        with self._lock:
            self.released = True

    def open_calls(self) -> int:
        """Held calls still open now (each is answered HOLD_SECONDS after it arrived)."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for arrived in self.arrivals if now - arrived < self.hold_seconds)


@pytest.fixture
def held_llm() -> Iterator[tuple[FakeOpenAIServer, HeldLLM]]:
    held = HeldLLM()
    with FakeOpenAIServer(default=held) as server:
        yield server, held


def _agent(owner: Persona, base_url: str, settings: Any) -> Any:
    # An enterprise tenant whose concurrency quota is above the burst.
    owner.tenant.tier, owner.tenant.quota_overrides = "enterprise", {"concurrent_runs": None}
    owner.tenant.save(update_fields=["tier", "quota_overrides"])
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [base_url]}
    provider = {
        "kind": "openai",
        "model": "gpt-4o-mini",
        "base_url": base_url,
        "api_key": "${OPENAI_API_KEY}",
        "timeout_seconds": 60,
        "max_retries": 0,
    }
    config = {**SUPPORT_CONFIG, "default_threshold": 0.05, "llm": {"providers": [provider]}}
    return create_agent(
        actor=ACTOR, tenant=owner.tenant, name="busy", blueprint="support_agent", config=config
    )


def _count(tenant_id: int, *statuses: str) -> int:
    with tenant_scope(tenant_id):
        return Run.objects.filter(status__in=statuses).count()


def _wait(predicate: Any, timeout: float, what: Any, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out waiting for {said}\n{log.read_text()[-4000:]}")


def _outcomes(tenant_id: int) -> str:
    """Why runs settled early, for a failure message: (status, escalation reason) counts."""
    with tenant_scope(tenant_id):
        rows = Run.objects.values_list("status", "result", "error")
        counts = Counter(
            (status, (result or {}).get("escalation_reason") or error[:80])
            for status, result, error in rows
        )
    return ", ".join(f"{status}/{why}: {n}" for (status, why), n in counts.most_common(6))


def _settled_once(tenant_id: int, run_ids: list[str]) -> None:
    with connection.cursor() as cursor:
        for sql in (
            # one settling transition per run
            "SELECT run_id FROM agentflow_runtransition WHERE run_id::text = ANY(%s) "
            "AND to_status IN ('completed', 'awaiting_review', 'failed') "
            "GROUP BY run_id HAVING count(*) <> 1",
            # one answer per run
            "SELECT run_id FROM agentflow_message WHERE run_id::text = ANY(%s) "
            "AND role = 'assistant' GROUP BY run_id HAVING count(*) > 1",
            # one settling audit event per run
            "SELECT target_id FROM governance_auditevent WHERE target_id = ANY(%s) "
            "AND action IN ('run.completed', 'run.escalated', 'run.failed') "
            "GROUP BY target_id HAVING count(*) <> 1",
        ):
            cursor.execute(sql, [run_ids])
            assert cursor.fetchall() == [], sql
    with tenant_scope(tenant_id):
        statuses = set(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True))
    assert statuses <= {RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW}, statuses


def test_a_killed_run_worker_with_a_hundred_runs_in_flight_loses_and_doubles_none(
    owner: Persona,
    held_llm: tuple[FakeOpenAIServer, HeldLLM],
    settings: Any,
    tmp_path: Path,
) -> None:
    server, held = held_llm
    agent = _agent(owner, server.base_url, settings)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_workers(),
        "OPENAI_API_KEY": "sk-test",
        "LLM_ALLOWED_BASE_URLS": server.base_url,
        # No visibility timeout to wait for: a runs-only worker keeps no unacked copy in
        # Redis, so only the sweep brings the killed worker's runs back.
        "DB_POOL_MAX_SIZE": "10",
    }
    runner = ("--prefetch-multiplier", "1")
    log_path = tmp_path / "runner.log"
    log = log_path.open("ab")
    first = start_worker(env, log, pool="threads", concurrency=150, queues="runs", extra=runner)
    second = None
    try:
        with tenant_scope(owner.tenant.pk):
            run_ids = [
                str(
                    start_run(
                        actor=ACTOR,
                        agent=agent,
                        request=RunRequest(user_id=f"user-{n}", message="Reset password?"),
                    ).pk
                )
                for n in range(RUNS)
            ]
        _wait(
            lambda: held.open_calls() >= IN_FLIGHT_GOAL,
            50,
            lambda: (
                f"{IN_FLIGHT_GOAL} LLM calls open at once ({held.open_calls()} open of "
                f"{len(held.arrivals)} calls; {_count(owner.tenant.pk, RunStatus.PROCESSING)} "
                f"processing; {_outcomes(owner.tenant.pk)})"
            ),
            log_path,
        )
        processing = _count(owner.tenant.pk, RunStatus.PROCESSING)
        assert processing >= IN_FLIGHT_GOAL, processing
        assert first.poll() is None

        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        held.release()
        second = start_worker(
            env, log, pool="threads", concurrency=150, queues="runs", extra=runner
        )
        # The sweep as beat runs it: orphaned `processing` runs at once (their leases went
        # with the dead worker's connection), `pending` ones after the grace period.
        settings.AGENTFLOW = {**settings.AGENTFLOW, "RUN_PENDING_GRACE_SECONDS": 1}

        def all_settled() -> bool:
            services.recover_stuck_runs()
            return _count(owner.tenant.pk, RunStatus.PENDING, RunStatus.PROCESSING) == 0

        _wait(all_settled, 120, "every run to settle after the kill", log_path)
    finally:
        stop_worker(first)
        stop_worker(second)
        log.close()
    _settled_once(owner.tenant.pk, run_ids)


@contextmanager
def _one_run_in_its_llm_call(
    owner: Persona, settings: Any, tmp_path: Path, user_id: str
) -> Iterator[tuple[Run, HeldLLM, Path]]:
    """A run worker (threads, runs only) whose one run is inside its first LLM call, held
    for 4 s: the run, the held LLM and the worker's log."""
    held = HeldLLM(hold_seconds=4.0)
    with FakeOpenAIServer(default=held) as server:
        agent = _agent(owner, server.base_url, settings)
        env = {
            **os.environ,
            "DATABASE_URL": database_url_for_workers(),
            "OPENAI_API_KEY": "sk-test",
            "LLM_ALLOWED_BASE_URLS": server.base_url,
        }
        log_path = tmp_path / "runner.log"
        log = log_path.open("ab")
        worker = start_worker(env, log, pool="threads", concurrency=4, queues="runs")
        try:
            with tenant_scope(owner.tenant.pk):
                run = start_run(
                    actor=ACTOR, agent=agent, request=RunRequest(user_id, "Reset password?")
                )
            _wait(lambda: len(held.arrivals) == 1, 60, "the run's first LLM call", log_path)
            yield run, held, log_path
        finally:
            stop_worker(worker)
            log.close()


def test_a_run_cancelled_while_its_llm_call_is_open_is_interrupted_there(
    owner: Persona, settings: Any, tmp_path: Path
) -> None:
    """Cancelling stops the work: the run's coroutine is cancelled inside its first LLM
    call, so the calls that would follow it (generation, after classification) never
    reach the LLM. Before, the run finished its work and only then lost the race."""
    with _one_run_in_its_llm_call(owner, settings, tmp_path, "cancel-me") as (run, held, log):
        with tenant_scope(owner.tenant.pk):
            services.cancel_run(actor=ACTOR, run=run)
        _wait(lambda: b"run.interrupted" in log.read_bytes(), 10, "the interrupt", log)
        time.sleep(held.hold_seconds + 2)  # past the held call's answer
    assert len(held.arrivals) == 1, "the cancelled run went on calling its LLM"
    with tenant_scope(owner.tenant.pk):
        assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


def _unacked_mentioning(text: str) -> list[bytes]:
    """Messages in kombu's unacked hash (ack emulation) whose body mentions `text`."""
    from agentflow.server.celery import app

    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return [m for m in channel.client.hvals(channel.unacked_key) if text.encode() in m]


def test_a_runs_only_worker_keeps_no_unacked_copy_in_redis(
    owner: Persona, settings: Any, tmp_path: Path
) -> None:
    """Issue 15: kombu's ack emulation cost the runner two Redis round trips per run; a worker
    that consumes only `runs` leaves recovery to the PostgreSQL sweeps (the kill test above)."""
    from agentflow.server.celery import app

    # The control: a consumer with ack emulation (every other worker) does keep a copy here.
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue(f"ack-control-{tmp_path.name}")
        queue.put({"marker": tmp_path.name})
        message = queue.get(timeout=5)
        assert _unacked_mentioning(tmp_path.name), "the control found no unacked copy"
        message.ack()
        queue.queue.delete()
        queue.close()
    with _one_run_in_its_llm_call(owner, settings, tmp_path, "no-copy") as (run, _, log):
        assert _unacked_mentioning(str(run.pk)) == []
        _wait(
            lambda: _count(owner.tenant.pk, RunStatus.PROCESSING, RunStatus.PENDING) == 0,
            60,
            "the run to settle",
            log,
        )
