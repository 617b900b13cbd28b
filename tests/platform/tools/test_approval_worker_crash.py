"""An approved tool call survives kill -9 of the worker: exactly once when the worker died
before it took the call, never twice when it died while the tool ran (issue 17).

Real ``celery worker`` processes run the run and the approved call; the tool is an MCP
stdio server (SDK) that appends one ledger line per execution, so executions are counted
outside every process involved."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow import orchestration
from agentflow.models import Run, ToolCall
from agentflow.services import create_agent
from governance.services import set_tool_permissions
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.tools.test_run_tools import fsm
from tests.platform.workers import database_url_for_workers, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
LEDGER_SERVER = str(Path(__file__).parent / "ledger_mcp_server.py")


def ledger_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def paused_run(owner: Persona, ledger: Path, env: dict[str, str], log: Any) -> Any:
    """An agent whose plan calls ledger.record (MCP, requires_confirmation); a real worker
    runs its run until it pauses. Returns (worker, request, call)."""
    config = {
        **SUPPORT_CONFIG,
        "tools": ["ledger.record"],
        "mcp_servers": [
            {
                "name": "ledger",
                "transport": "stdio",
                "command": [sys.executable, LEDGER_SERVER],
                "env": {"LEDGER_PATH": str(ledger)},
            }
        ],
        "planner": fsm("{tool: ledger.record, arguments: {note: \"'refund A-42'\"}}"),
    }
    agent = create_agent(
        actor=ACTOR, tenant=owner.tenant, name="ledger", blueprint="support_agent", config=config
    )
    set_tool_permissions(actor=ACTOR, agent=agent, grants=[{"tool": "*", "level": "execute"}])
    worker = start_worker(env, log)
    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "ledger-user", "message": "Please refund order A-42"},
        headers={"Prefer": "respond-async"},
    )
    assert created.status_code == 202, created.content
    run_id = created.json()["id"]
    wait_until(run_in(owner, run_id, "awaiting_review"), 180, "the run to pause")
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=run_id)
        call = ToolCall.objects.get(run_id=run_id)
    assert call.status == "awaiting_approval"
    assert ledger_lines(ledger) == 0
    return worker, request, call


def run_in(owner: Persona, run_id: Any, status: str) -> Any:
    def check() -> bool:
        with tenant_scope(owner.tenant.pk):
            return Run.objects.get(pk=run_id).status == status

    return check


def backdate(owner: Persona, call: ToolCall, age: timedelta) -> None:
    with tenant_scope(owner.tenant.pk):
        ToolCall.objects.filter(pk=call.pk).update(approved_at=datetime.now(UTC) - age)


def worker_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_workers(),
        "MCP_ALLOWED_COMMANDS": sys.executable,
        "MCP_CONNECT_TIMEOUT_SECONDS": "120",
        "LOG_LEVEL": "INFO",
    }


def test_worker_killed_before_taking_the_approved_call(owner: Persona, tmp_path: Path) -> None:
    """The worker is killed -9; the approval's task finds no worker; the sweep re-sends it
    (two messages now) and the next worker runs the call exactly once."""
    ledger = tmp_path / "ledger.txt"
    log = (tmp_path / "workers.log").open("ab")
    first, second = None, None
    try:
        first, request, call = paused_run(owner, ledger, worker_env(), log)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        approved = owner.post(f"/api/v1/hitl/queue/{request.pk}/respond", {"decision": "approve"})
        assert approved.status_code == 200, approved.content
        backdate(owner, call, timedelta(minutes=1))  # the sweep's grace has passed
        assert orchestration.recover_tool_calls() == 1
        second = start_worker(worker_env(), log)
        wait_until(run_in(owner, call.run_id, "completed"), 180, "the run to complete")
        with tenant_scope(owner.tenant.pk):
            call.refresh_from_db()
        assert call.status == "ok", call.error
        assert ledger_lines(ledger) == 1
        assert orchestration.recover_tool_calls() == 0
    finally:
        stop_worker(second)
        stop_worker(first)
        log.close()


def test_worker_killed_right_after_approval_never_runs_it_twice(
    owner: Persona, tmp_path: Path
) -> None:
    """Killed -9 right after the approval: whether the worker had not taken the call, had
    taken it, or had run it, the call ends once and the ledger has at most one line."""
    ledger = tmp_path / "ledger.txt"
    log = (tmp_path / "workers.log").open("ab")
    first, second = None, None
    try:
        first, request, call = paused_run(owner, ledger, worker_env(), log)
        approved = owner.post(f"/api/v1/hitl/queue/{request.pk}/respond", {"decision": "approve"})
        assert approved.status_code == 200, approved.content
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        # As if the sweep ran after every deadline: re-send or give up, never re-run.
        backdate(owner, call, timedelta(hours=1))
        orchestration.recover_tool_calls()
        second = start_worker(worker_env(), log)
        wait_until(run_in(owner, call.run_id, "completed"), 180, "the run to settle")
        with tenant_scope(owner.tenant.pk):
            call.refresh_from_db()
        assert call.status in ("ok", "error")
        if call.status == "ok":
            assert ledger_lines(ledger) == 1
        else:  # it was running when the worker died: its outcome is unknown, not re-run
            assert "not run again" in call.error
            assert ledger_lines(ledger) <= 1
        assert orchestration.recover_tool_calls() == 0
    finally:
        stop_worker(second)
        stop_worker(first)
        log.close()
