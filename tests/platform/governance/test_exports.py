"""Compliance exports: the tenant's audit trail and data as JSON or CSV, streamed, with the
chain head they end at; one end user's data for a GDPR access request."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from django.test import AsyncClient

from agentflow.models import Agent
from governance import exports
from governance.audit import chain_head
from governance.erasure import subject_digest
from governance.exports import COLUMNS, PARTS, USER_PARTS
from governance.models import AuditEvent
from governance.verify import verify_chain
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.api.test_bad_input import assert_error, lenient

EXPORT = "/api/v1/governance/export"


def _content(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


def _run(owner: Persona, agent: Agent, user_id: str, message: str) -> str:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": user_id, "message": message},
        headers={"Prefer": "respond-async"},
    )
    return str(response.json()["id"])


@pytest.fixture
def data(owner: Persona, outsider: Persona, agent: Agent) -> dict[str, Any]:
    runs = [
        _run(owner, agent, "carol", "Where is invoice INV-1?"),
        _run(owner, agent, "dave", "Reset my password please"),
    ]
    make_agent(outsider, name="globex-bot")
    _run(outsider, Agent.unscoped.get(tenant=outsider.tenant), "eve", "Globex secret ZX-9")
    return {"runs": runs}


def test_the_json_export_holds_the_audit_trail_and_the_data_up_to_its_head(
    owner: Persona, agent: Agent, data: dict[str, Any]
) -> None:
    response = owner.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith(f'attachment; filename="{owner.tenant.slug}-')
    export = json.loads(_content(response))
    head = chain_head(owner.tenant.pk)
    assert head is not None
    assert export["chain_head"] == {"sequence": head["sequence"], "hash": head["hash"]}
    assert response["X-Audit-Chain-Sequence"] == str(head["sequence"])
    assert response["X-Audit-Chain-Hash"] == head["hash"]
    # The audit part is the whole chain, ending with this export's own event.
    assert [e["sequence"] for e in export["audit"]] == list(range(1, head["sequence"] + 1))
    assert export["audit"][-1]["action"] == "data.exported"
    assert export["audit"][-1]["hash"] == head["hash"]
    assert set(export) == {"tenant", "generated_at", "chain_head", "end_user", *PARTS}
    assert [a["name"] for a in export["agents"]] == [agent.name]
    assert sorted(r["id"] for r in export["runs"]) == sorted(data["runs"])
    assert {r["input"] for r in export["runs"]} == {
        "Where is invoice INV-1?",
        "Reset my password please",
    }
    assert export["knowledge_chunks"]
    assert "Globex" not in json.dumps(export)
    assert "ZX-9" not in json.dumps(export)


def test_exports_are_audited_and_the_chain_still_verifies(owner: Persona, data: Any) -> None:
    owner.get(EXPORT + "?format=csv&part=runs")
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="data.exported")
    assert event.changes == {"format": "csv", "parts": ["runs"], "end_user": None}
    assert (event.actor_type, event.target_type) == ("api_key", "tenant")
    assert verify_chain(owner.tenant.pk).ok


@pytest.mark.parametrize("part", list(PARTS))
def test_every_part_exports_as_csv_with_its_header(
    owner: Persona, data: dict[str, Any], part: str
) -> None:
    response = owner.get(f"{EXPORT}?format=csv&part={part}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(_content(response).decode())))
    assert rows[0] == list(COLUMNS[part])
    if part == "runs":
        assert len(rows) == 3
        assert {r[rows[0].index("user_id")] for r in rows[1:]} == {"carol", "dave"}


def test_csv_defaults_to_the_audit_trail_and_honours_accept(owner: Persona, data: Any) -> None:
    response = owner.get(EXPORT, headers={"Accept": "text/csv"})
    rows = list(csv.DictReader(io.StringIO(_content(response).decode())))
    assert rows[-1]["action"] == "data.exported"
    assert rows[-1]["hash"] == response["X-Audit-Chain-Hash"]
    assert json.loads(rows[0]["changes"])["slug"] == owner.tenant.slug  # nested as JSON


def test_one_end_users_export_holds_only_their_data(owner: Persona, data: Any) -> None:
    response = owner.get(f"{EXPORT}?user_id=carol")
    export = json.loads(_content(response))
    assert export["end_user"] == "carol"
    assert set(export) - {"tenant", "generated_at", "chain_head", "end_user"} == set(USER_PARTS)
    assert [r["user_id"] for r in export["runs"]] == ["carol"]
    assert [s["user_id"] for s in export["sessions"]] == ["carol"]
    assert "dave" not in json.dumps(export)
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="data.exported")
    assert event.changes["end_user"] == subject_digest(owner.tenant.pk, "carol")
    assert "carol" not in json.dumps(event.changes)


def test_a_large_export_streams_and_a_small_one_has_a_length(
    owner: Persona, data: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = owner.get(EXPORT)
    assert not small.streaming
    assert int(small["Content-Length"]) == len(small.content)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "EXPORT_BUFFER_BYTES": 256}
    monkeypatch.setattr(exports, "CHUNK_BYTES", 512)
    large = owner.get(EXPORT)
    assert large.streaming
    chunks = list(large.streaming_content)
    assert len(chunks) > 3
    export = json.loads(b"".join(chunks))
    assert (
        export["chain_head"]["sequence"] == json.loads(small.content)["chain_head"]["sequence"] + 1
    )


@pytest.mark.django_db(transaction=True)
async def test_an_asgi_server_streams_the_export_asynchronously(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ASGI the chunks are produced one thread hop at a time (no buffering of the
    whole export, and no warning about consuming a sync iterator)."""
    from asgiref.sync import sync_to_async

    owner = await sync_to_async(make_persona)("Acme", tier="professional")
    settings.AGENTFLOW = {**settings.AGENTFLOW, "EXPORT_BUFFER_BYTES": 64}
    monkeypatch.setattr(exports, "CHUNK_BYTES", 256)
    client = AsyncClient()
    response: Any = await client.get(EXPORT, headers={"Authorization": f"Bearer {owner.key}"})
    assert response.status_code == 200
    assert response.streaming
    assert response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) > 3
    assert json.loads(b"".join(chunks))["tenant"]["slug"] == owner.tenant.slug


def test_head_announces_the_chain_head_without_exporting(owner: Persona, data: Any) -> None:
    before = AuditEvent.unscoped.filter(tenant=owner.tenant).count()
    response = owner.client.head(EXPORT, headers={"Authorization": f"Bearer {owner.key}"})
    assert response.status_code == 200
    assert response["X-Audit-Chain-Sequence"] == str(before)
    assert AuditEvent.unscoped.filter(tenant=owner.tenant).count() == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("format=xml", "format"),
        ("part=secrets", "part"),
        ("format=csv&part=members&user_id=carol", "part"),
        ("user_id=" + "x" * 201, "user_id"),
    ],
)
def test_bad_export_requests_are_422_and_not_audited(
    owner: Persona, data: Any, query: str, field: str
) -> None:
    before = AuditEvent.unscoped.filter(tenant=owner.tenant).count()
    response = lenient(owner).get(f"{EXPORT}?{query}")
    assert field in assert_error(response, 422, "validation_error")["errors"]
    assert AuditEvent.unscoped.filter(tenant=owner.tenant).count() == before
