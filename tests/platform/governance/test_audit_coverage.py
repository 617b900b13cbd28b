"""Writes that were not audited before governance: a failed run (logins: test_logins.py)."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import services as agent_services
from agentflow.models import Agent, Run, RunStatus
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona


def test_a_failed_run_is_audited_without_the_error_text(
    owner: Persona, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(run: Any) -> Any:
        raise RuntimeError("cannot answer 'my card 4111 1111 1111 1111 was charged twice'")

    monkeypatch.setattr(agent_services, "_process", explode)
    run_id = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u1", "message": "my card was charged twice"},
        headers={"Prefer": "respond-async"},
    ).json()["id"]
    with tenant_scope(owner.tenant.pk):
        assert agent_services.execute_run(run_id) == RunStatus.FAILED
        assert "4111" in Run.objects.get(pk=run_id).error  # the run keeps it for its owner
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="run.failed")
    assert (event.target_type, event.target_id) == ("run", run_id)
    assert event.changes == {"error": "RuntimeError"}
    assert (event.actor_type, event.actor_id) == ("system", "agent")
