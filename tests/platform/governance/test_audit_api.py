"""Reading the audit trail over the API: filters, the list envelope, the tenant's own chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from agentflow.models import Agent
from governance.audit import Actor, append
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tenants.scoping import TenantScopeMissing
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, lenient, nothing_written
from tests.platform.governance.conftest import CHAIN_LENGTH, as_attacker, grow_chain

AUDIT = "/api/v1/governance/audit"


def _actions(persona: Persona, **params: str) -> list[str]:
    response = persona.get(f"{AUDIT}?{urlencode(params)}")
    assert response.status_code == 200, response.content
    return [event["action"] for event in response.json()["results"]]


def test_the_trail_is_listed_newest_first_in_the_envelope(owner: Persona, agent: Agent) -> None:
    body = owner.get(AUDIT).json()
    assert set(body) == {"results", "total", "limit", "offset", "has_more"}
    assert body["total"] == AuditEvent.unscoped.filter(tenant=owner.tenant).count()
    sequences = [event["sequence"] for event in body["results"]]
    assert sequences == sorted(sequences, reverse=True)
    first = owner.get(f"{AUDIT}?sort_by=sequence&sort_order=asc&limit=1").json()
    assert first["results"][0]["action"] == "tenant.created"
    assert first["has_more"] is True
    assert first["results"][0]["prev_hash"] == "0" * 64


def test_filters_by_actor_action_target_and_time(owner: Persona, agent: Agent) -> None:
    append(
        tenant_id=owner.tenant.pk,
        actor=Actor("user", "42"),
        action="agent.updated",
        target_type="agent",
        target_id=agent.pk,
    )
    assert _actions(owner, actor_type="user", actor_id="42") == ["agent.updated"]
    assert _actions(owner, action="agent.created") == ["agent.created"]
    assert _actions(owner, action="agent.*") == ["agent.updated", "agent.created"]
    assert set(_actions(owner, target_type="agent", target_id=str(agent.pk))) == {
        "agent.created",
        "agent.updated",
    }
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert _actions(owner, since=later) == []
    assert (
        len(_actions(owner, until=later)) == AuditEvent.unscoped.filter(tenant=owner.tenant).count()
    )
    assert _actions(owner, since="2000-01-01T00:00:00+15:59", action="tenant.created") == [
        "tenant.created"
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("until=2026-01-01T00:00:00", "until"),
        ("sort_by=hash", "sort_by"),
        ("limit=0", "limit"),
        ("action=" + "x" * 101, "action"),
    ],
)
def test_bad_filters_are_422(owner: Persona, query: str, field: str) -> None:
    with nothing_written(owner.tenant):
        response = lenient(owner).get(f"{AUDIT}?{query}")
        assert field in assert_error(response, 422, "validation_error")["errors"]


def test_a_tenant_reads_only_its_own_chain(owner: Persona, outsider: Persona) -> None:
    grow_chain(owner.tenant)
    body = outsider.get(AUDIT).json()
    assert body["total"] == AuditEvent.unscoped.filter(tenant=outsider.tenant).count()
    assert {e["target_id"] for e in body["results"]} >= {str(outsider.tenant.pk)}
    assert str(owner.tenant.pk) not in {e["target_id"] for e in body["results"]}


def test_the_default_manager_fails_closed_outside_a_tenant_scope(owner: Persona) -> None:
    append(tenant_id=None, actor=Actor.system(), action="platform.checked")  # no tenant
    with pytest.raises(TenantScopeMissing):
        list(AuditEvent.objects.all())
    with pytest.raises(TenantScopeMissing):
        AuditEvent.objects.filter(tenant=owner.tenant).count()
    with tenant_scope(owner.tenant.pk):
        assert {e.tenant_id for e in AuditEvent.objects.all()} == {owner.tenant.pk}
    chains = set(AuditEvent.unscoped.values_list("tenant_id", flat=True))
    assert {None, owner.tenant.pk} <= chains  # the loud manager reads every chain


def test_verify_endpoint_reports_the_tenants_own_chain(owner: Persona, outsider: Any) -> None:
    grow_chain(owner.tenant)
    response = owner.get("/api/v1/governance/audit/verify")
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["events"], body["first_bad"]) == (True, CHAIN_LENGTH, None)
    with as_attacker() as cursor:
        cursor.execute(
            "DELETE FROM governance_auditevent WHERE tenant_id = %s AND sequence = 2",
            [owner.tenant.pk],
        )
    body = owner.get("/api/v1/governance/audit/verify").json()
    assert (body["ok"], body["first_bad"], body["reason"]) == (False, 3, "broken_link")
    # Another tenant's chain is not this tenant's business, nor affected.
    assert outsider.get("/api/v1/governance/audit/verify").json()["ok"] is True


def test_verify_endpoint_checks_the_exported_checkpoints(
    owner: Persona, settings: Any, tmp_path: Any
) -> None:
    from governance.checkpoints import export_checkpoints

    grow_chain(owner.tenant)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "AUDIT_CHECKPOINT_PATH": str(tmp_path)}
    export_checkpoints(url="")
    with as_attacker() as cursor:
        cursor.execute(
            "DELETE FROM governance_auditevent WHERE tenant_id = %s AND sequence > 8",
            [owner.tenant.pk],
        )
    body = owner.get("/api/v1/governance/audit/verify").json()
    assert (body["ok"], body["first_bad"], body["reason"]) == (False, 9, "truncated")
    assert body["checkpoint_sequence"] == CHAIN_LENGTH
    (tmp_path / f"tenant-{owner.tenant.pk}.jsonl").write_text("garbage\n")
    body = owner.get("/api/v1/governance/audit/verify").json()
    assert (body["ok"], body["reason"]) == (False, "checkpoints_unreadable")
