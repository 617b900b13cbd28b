"""Every log line a worker writes while processing a run names the run (SPEC 12)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from agentflow.models import RunStatus
from agentflow.services import create_agent, execute_run
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.api.conftest import owner as owner

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_run_id_is_on_every_line_of_its_processing(
    owner: Persona, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines written on the worker's event loop too: a first LLM that nobody answers
    (a closed local port) makes the kernel log its failover to the offline one."""
    closed = "http://127.0.0.1:9/v1"
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [closed]}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    down = {"kind": "openai", "base_url": closed, "api_key": "${OPENAI_API_KEY}"}
    llm = {"providers": [{**down, "max_retries": 0, "timeout_seconds": 2}, {"kind": "offline"}]}
    agent = create_agent(
        actor=ACTOR,
        tenant=owner.tenant,
        name="support",
        blueprint="support_agent",
        config={**SUPPORT_CONFIG, "llm": llm},
    )
    created = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u1", "message": "How do I reset my password?"},
        headers={"Prefer": "respond-async"},
    )
    run_id = created.json()["id"]
    with (
        tenant_scope(owner.tenant.pk),
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
    ):
        outcome = execute_run(run_id)
    assert outcome in (RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW)  # settled, either way
    assert "llm.failover" in [line["event"] for line in logs]
    assert all(line.get("run_id") == run_id for line in logs), logs
    assert structlog.contextvars.get_contextvars().get("run_id") is None  # unbound after


def test_a_run_id_bound_by_the_caller_is_restored_after_the_run(owner: Persona) -> None:
    """The run's id is bound for its processing only: whatever the caller had bound before
    (here another run's id) is what its later lines carry again, and a missing run too."""
    missing = "00000000-0000-0000-0000-000000000000"
    with (
        tenant_scope(owner.tenant.pk),
        structlog.contextvars.bound_contextvars(run_id="outer"),
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
    ):
        assert execute_run(missing) == "missing"
        assert structlog.contextvars.get_contextvars()["run_id"] == "outer"
        structlog.get_logger().info("after")
    assert [(line["event"], line["run_id"]) for line in logs] == [
        ("run.vanished", missing),
        ("after", "outer"),
    ]
