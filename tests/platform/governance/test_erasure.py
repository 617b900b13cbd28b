"""GDPR erasure removes one end user's data everywhere it lives, and nothing of anyone else.

"Everywhere" is checked by scanning every text and JSON column of every table in the
database for the user's id and their words, so a table added later that copies them is
caught here too (it then needs an eraser: ``governance.erasure.register_eraser``).
Runs execute for real (``transactional_db``: the pipeline's worker thread must see the
agent), so sessions, threads with their centroids, messages and memory cases with their
embeddings exist as in production.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from agentflow.models import AgentSession, MemoryCase, Message, Run, Thread
from agentflow.services import execute_run
from governance.audit import chain_head
from governance.erasure import ERASED, subject_digest
from governance.models import AuditEvent
from governance.verify import verify_chain
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona, make_agent, make_persona

ALICE = "alice-7f3a"
BOB = "bob-91c2"
# Each user's words, distinctive enough to be found wherever a copy lands.
ALICE_WORDS = ["How do I reset my password? Zanzibar", "I forgot my password Zanzibar again"]
BOB_WORDS = ["How do I reset my password? Kilimanjaro", "I forgot my password Kilimanjaro"]


def _text_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' "
            "AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
        )
        return list(cursor.fetchall())


def traces(marker: str) -> dict[str, int]:
    """Rows per table.column anywhere in the database whose text contains ``marker``."""
    found: dict[str, int] = {}
    with connection.cursor() as cursor:
        for table, column in _text_columns():
            cursor.execute(
                f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s',
                [f"%{marker}%"],
            )
            (count,) = cursor.fetchone()
            if count:
                found[f"{table}.{column}"] = count
    return found


def _converse(owner: Persona, agent: Any, user_id: str, words: list[str]) -> list[str]:
    run_ids = []
    for message in words:
        run = owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": user_id, "message": message},
            headers={"Prefer": "respond-async", "Idempotency-Key": f"{user_id}-{message}"},
        ).json()
        with tenant_scope(owner.tenant.pk):
            execute_run(run["id"])
        run_ids.append(run["id"])
    return run_ids


def _vectors(user_id: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT embedding::text FROM agentflow_memorycase WHERE user_id = %s", [user_id]
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def conversations(transactional_db: None) -> dict[str, Any]:
    owner = make_persona("Acme", tier="professional")
    agent = make_agent(owner)
    alice_runs = _converse(owner, agent, ALICE, ALICE_WORDS)
    bob_runs = _converse(owner, agent, BOB, BOB_WORDS)
    return {"owner": owner, "agent": agent, "alice_runs": alice_runs, "bob_runs": bob_runs}


def test_erasure_removes_the_user_everywhere_and_nothing_of_others(
    conversations: dict[str, Any],
) -> None:
    owner: Persona = conversations["owner"]
    alice_vectors = _vectors(ALICE)
    with tenant_scope(owner.tenant.pk):
        # The data is really there before: sessions, threads, messages, memory with vectors.
        assert AgentSession.objects.filter(user_id=ALICE).count() == 1
        assert Thread.objects.filter(session__user_id=ALICE).exclude(state={}).exists()
        assert Message.objects.filter(session__user_id=ALICE).count() >= 2
        assert MemoryCase.objects.filter(user_id=ALICE).count() == 2
    assert len(alice_vectors) == 2
    before_alice = traces("Zanzibar") | traces(ALICE)
    before_bob = {"words": traces("Kilimanjaro"), "id": traces(BOB), "vectors": _vectors(BOB)}
    assert {
        "agentflow_message.content",
        "agentflow_run.input",
        "agentflow_memorycase.question",
        "tenants_idempotencyrecord.response_body",
    } <= before_alice.keys()

    response = owner.post("/api/v1/governance/erasures", {"user_id": ALICE})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["subject"] == subject_digest(owner.tenant.pk, ALICE)
    assert body["erased"]["sessions"] == 1
    assert body["erased"]["memory_cases"] == 2
    assert body["erased"]["runs"] == len(ALICE_WORDS)
    left = traces("Zanzibar") | traces(ALICE)
    assert not left, (
        f"the erased user's data is still in {sorted(left)}: the app owning that table "
        "must erase it (governance.erasure.register_eraser)"
    )
    assert _vectors(ALICE) == []
    with connection.cursor() as cursor:  # no copy of her vectors under another name either
        for vector in alice_vectors:
            cursor.execute(
                "SELECT count(*) FROM agentflow_memorycase WHERE embedding <=> %s::vector < 1e-6",
                [vector],
            )
            assert cursor.fetchone()[0] == 0
    # Bob is untouched, row for row and vector for vector.
    assert {"words": traces("Kilimanjaro"), "id": traces(BOB), "vectors": _vectors(BOB)} == (
        before_bob
    )
    with tenant_scope(owner.tenant.pk):
        # Alice's runs stay for accounting, emptied.
        for run in Run.objects.filter(pk__in=conversations["alice_runs"]):
            assert (run.user_id, run.input, run.result, run.session_id) == (ERASED, "", None, None)
            assert run.tokens >= 0
        assert Run.objects.filter(pk__in=conversations["bob_runs"], user_id=BOB).count() == 2


def test_unfinished_runs_are_cancelled_and_review_copies_emptied(
    conversations: dict[str, Any],
) -> None:
    """A run still waiting (for a worker or a reviewer) is cancelled through the run service
    before its content goes; the review request's copies of question and answer go too."""
    from hitl.models import HITLRequest
    from hitl.services import request_review

    owner: Persona = conversations["owner"]
    agent = conversations["agent"]
    waiting = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": ALICE, "message": "Refund my Zanzibar trip"},
        headers={"Prefer": "respond-async"},
    ).json()["id"]
    review = request_review(
        run=Run.unscoped.get(pk=waiting),
        result={"intent": "BILLING", "proposed_answer": "Your Zanzibar refund is on its way."},
        actor=ACTOR,
    )
    assert "hitl_hitlrequest.question" in traces("Zanzibar")
    body = owner.post("/api/v1/governance/erasures", {"user_id": ALICE}).json()
    assert body["erased"]["cancelled_runs"] == 1
    assert body["erased"]["review_requests"] == 1
    assert Run.unscoped.get(pk=waiting).status == "cancelled"
    assert AuditEvent.unscoped.filter(action="run.cancelled", target_id=waiting).exists()
    request = HITLRequest.unscoped.get(pk=review.pk)
    assert (request.question, request.proposed_answer) == ("", "")
    assert request.context["user_id"] == ERASED
    assert traces("Zanzibar") == {}
    assert traces(ALICE) == {}


def test_erasure_is_audited_without_the_erased_content(conversations: dict[str, Any]) -> None:
    owner: Persona = conversations["owner"]
    owner.post("/api/v1/governance/erasures", {"user_id": ALICE})
    event = AuditEvent.unscoped.get(tenant=owner.tenant, action="end_user.erased")
    assert (event.target_type, event.target_id) == (
        "end_user",
        subject_digest(owner.tenant.pk, ALICE),
    )
    assert event.actor_type == "api_key"
    assert event.changes["erased"]["memory_cases"] == 2
    assert event.changes["erased"]["cancelled_runs"] == 0
    assert ALICE not in str(event.changes)
    assert "Zanzibar" not in str(event.changes)
    assert verify_chain(owner.tenant.pk).ok
    assert chain_head(owner.tenant.pk) == {"sequence": event.sequence, "hash": event.hash}


def test_erasing_again_or_an_unknown_user_changes_nothing_but_is_recorded(
    conversations: dict[str, Any],
) -> None:
    owner: Persona = conversations["owner"]
    owner.post("/api/v1/governance/erasures", {"user_id": ALICE})
    again = owner.post("/api/v1/governance/erasures", {"user_id": ALICE}).json()
    assert set(again["erased"].values()) == {0}
    unknown = owner.post("/api/v1/governance/erasures", {"user_id": "nobody"}).json()
    assert set(unknown["erased"].values()) == {0}
    assert AuditEvent.unscoped.filter(tenant=owner.tenant, action="end_user.erased").count() == 3


def test_erasure_stays_inside_the_tenant(conversations: dict[str, Any]) -> None:
    """Another tenant's end user with the same id is a different person: untouched."""
    other = make_persona("Globex", tier="professional")
    other_agent = make_agent(other, name="globex-bot")
    _converse(other, other_agent, ALICE, ["How do I reset my password? Timbuktu"])
    conversations["owner"].post("/api/v1/governance/erasures", {"user_id": ALICE})
    assert traces("Timbuktu")
    assert MemoryCase.unscoped.filter(tenant=other.tenant, user_id=ALICE).count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": "x" * 201}, "user_id"),
        ({"user_id": "a", "also": 1}, "also"),
    ],
)
def test_bad_erasure_requests_are_422_and_erase_nothing(
    conversations: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    owner: Persona = conversations["owner"]
    before = traces("Zanzibar")
    response = owner.post("/api/v1/governance/erasures", body)
    assert response.status_code == 422
    assert field in response.json()["errors"]
    assert traces("Zanzibar") == before
