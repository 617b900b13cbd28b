"""Chain heads are anchored outside the database every few seconds, not only every 5 minutes.

Events deleted from a chain's tail after its last anchor are named by verify; verify says
how many events no anchor covers yet.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from governance.audit import Actor, append
from governance.checkpoints import anchor_heads, read_checkpoints
from governance.tasks import audit_anchor
from governance.verify import verify_chain
from tenants.models import Tenant
from tests.platform.api.conftest import Persona
from tests.platform.governance.conftest import CHAIN_LENGTH, as_attacker, grow_chain


@pytest.fixture
def anchors(settings: Any, tmp_path: Path) -> Path:
    """The checkpoint directory the app (anchors, verify, API) uses in this test."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "AUDIT_CHECKPOINT_PATH": str(tmp_path)}
    return tmp_path


def _append(tenant: Tenant, count: int) -> None:
    for _ in range(count):
        append(tenant_id=tenant.pk, actor=Actor.system("tests"), action="probe.later")


def test_events_deleted_after_the_last_anchor_are_named_by_verify(
    owner: Persona, anchors: Path
) -> None:
    grow_chain(owner.tenant)
    assert audit_anchor() >= 1  # beat's task, run in-process: every moved head
    assert anchor_heads() == []  # nothing moved since
    heads = {c.tenant_id: c.sequence for c in read_checkpoints(owner.tenant.pk, anchors)}
    assert heads == {owner.tenant.pk: CHAIN_LENGTH}
    with as_attacker() as cursor:  # full database access: the tail goes, triggers off
        cursor.execute(
            "DELETE FROM governance_auditevent WHERE tenant_id = %s AND sequence > 7",
            [owner.tenant.pk],
        )
    result = verify_chain(owner.tenant.pk, read_checkpoints(owner.tenant.pk))
    assert (result.ok, result.first_bad, result.reason) == (False, 8, "truncated")
    assert result.checkpoint_sequence == CHAIN_LENGTH
    body = owner.get("/api/v1/governance/audit/verify").json()
    assert (body["ok"], body["first_bad"], body["reason"]) == (False, 8, "truncated")
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("audit", "verify", "--tenant", owner.tenant.slug, stdout=out)
    assert json.loads(out.getvalue())["first_bad"] == 8


def test_verify_counts_the_events_not_yet_anchored(owner: Persona, anchors: Path) -> None:
    grow_chain(owner.tenant)
    assert owner.get("/api/v1/governance/audit/verify").json()["unanchored"] == CHAIN_LENGTH
    anchor_heads()
    _append(owner.tenant, 2)
    body = owner.get("/api/v1/governance/audit/verify").json()
    assert (body["ok"], body["checkpoint_sequence"], body["unanchored"]) == (
        True,
        CHAIN_LENGTH,
        2,
    )
    moved = anchor_heads()
    assert [(c.tenant_id, c.sequence) for c in moved if c.tenant_id == owner.tenant.pk] == [
        (owner.tenant.pk, CHAIN_LENGTH + 2)
    ]
    assert anchor_heads() == []  # an unchanged head is not written again
    assert owner.get("/api/v1/governance/audit/verify").json()["unanchored"] == 0
    out = StringIO()
    call_command("audit", "verify", "--tenant", owner.tenant.slug, stdout=out)
    assert json.loads(out.getvalue())["unanchored"] == 0


def test_beat_anchors_every_few_seconds() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["maintenance.audit_anchor"]
    assert entry["task"] == audit_anchor.name == "maintenance.audit_anchor"
    assert entry["schedule"] <= 5.0
    checkpoint = django_settings.CELERY_BEAT_SCHEDULE["maintenance.audit_checkpoint"]
    assert entry["schedule"] < checkpoint["schedule"]
