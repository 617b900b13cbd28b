"""What the pages show and what their forms do, through the Django test client."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape

from agentflow.models import Agent, KnowledgeDocument, Run, RunStatus
from governance.audit import Actor, append
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tenants.models import APIKey, Tenant
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.governance.conftest import as_attacker
from tests.platform.hitl.conftest import ALWAYS_REVIEW, escalated_run, review_of

NEW_KEY = re.compile(rb'data-testid="new-key">([^<]+)<')


def result_of(run: Run) -> dict[str, Any]:
    assert run.result is not None
    return run.result


def audit_count(tenant: Tenant) -> Counter[str]:
    return Counter(AuditEvent.unscoped.filter(tenant=tenant).values_list("action", flat=True))


# --- foreign and unknown ids ---


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_foreign_ids_are_not_found(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_
) -> None:
    foreign_run = escalated_run(foreign_agent)
    foreign_request = review_of(foreign_run)
    paths = [
        f"/runs/{foreign_run.pk}/",
        f"/runs/{foreign_run.pk}/?fragment=run",
        f"/hitl/{foreign_request.pk}/",
        f"/hitl/{foreign_request.pk}/?fragment=request",
        f"/agents/{foreign_agent.pk}/",
        f"/tenants/{globex.tenant.pk}/",
        "/runs/00000000-0000-0000-0000-000000000000/",
        "/tenants/987654321/",
    ]
    for path in paths:
        response = owner.get(path)
        assert response.status_code == 404, path
        assert str(foreign_run.input).encode() not in response.content
    before = audit_count(globex.tenant)
    posts = [
        (f"/hitl/{foreign_request.pk}/", {"action": "claim"}),
        (f"/hitl/{foreign_request.pk}/", {"action": "approve"}),
        (f"/agents/{foreign_agent.pk}/", {"name": "hijacked", "config": "{}"}),
        (f"/tenants/{globex.tenant.pk}/", {"action": "create_key", "name": "x", "scopes": "read"}),
    ]
    for path, data in posts:
        assert owner.post(path, data).status_code == 404, path
    with tenant_scope(globex.tenant.pk):
        key = APIKey.objects.first()
    assert key is not None
    # Acme's own tenant page, naming Globex's key: 404 too, and the key lives on.
    for action in ("revoke", "rotate"):
        response = owner.post(f"/tenants/{acme.tenant.pk}/", {"action": action, "key_id": key.pk})
        assert response.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    assert review_of(foreign_run).status == "pending"
    assert audit_count(globex.tenant) == before


# --- runs ---


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_runs_list_filters_and_run_detail(acme: Persona, agent: Agent, viewer: User_) -> None:
    run = escalated_run(agent)
    page = viewer.get("/runs/")
    assert page.status_code == 200
    assert f'data-run-id="{run.pk}"'.encode() in page.content
    assert b'data-testid="runs-table"' in page.content
    assert b'data-field="status" data-status="awaiting_review">awaiting_review<' in page.content

    rows = viewer.get("/runs/", fragment="rows").json()["rows"]
    assert [row["id"] for row in rows] == [str(run.pk)]
    assert rows[0]["status"] == "awaiting_review"
    assert viewer.get("/runs/", status="completed", fragment="rows").json()["rows"] == []
    assert len(viewer.get("/runs/", agent=str(agent.pk), fragment="rows").json()["rows"]) == 1
    assert viewer.get("/runs/", since="2999-01-01 00:00", fragment="rows").json()["rows"] == []

    # Bad filters: a clear error on the form, never a crash (tried: unknown status, a
    # non-UUID agent, a date that is not one).
    bad = viewer.get("/runs/", status="exploded", agent="not-a-uuid", since="yesterday-ish")
    assert bad.status_code == 400
    for name in ("status", "agent", "since"):
        assert f'data-field-error="{name}"'.encode() in bad.content

    detail = viewer.get(f"/runs/{run.pk}/")
    assert detail.status_code == 200
    body = detail.content
    assert b'data-testid="run-status" data-status="awaiting_review">awaiting_review<' in body
    with tenant_scope(acme.tenant.pk):
        steps = list(run.steps.values_list("name", flat=True))
    assert steps, "the pipeline recorded its stages"
    for name in steps:
        assert f'data-step="{name}"'.encode() in body
    reason = result_of(run)["escalation_reason"]
    assert f'data-testid="escalation-reason">{reason}<'.encode() in body
    knowledge_ids = [s["id"] for s in result_of(run)["sources"] if s["kind"] == "knowledge"]
    assert knowledge_ids, "the reset article was found"
    for knowledge_id in knowledge_ids:
        assert f'data-knowledge-id="{knowledge_id}"'.encode() in body
    assert viewer.get(f"/runs/{run.pk}/", fragment="run").json()["run"]["id"] == str(run.pk)


# --- review queue ---


def _decide(user: User_, request_id: object, **data: str) -> Any:
    return user.post(f"/hitl/{request_id}/", data)


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_queue_shows_the_evidence_and_orders_by_priority(
    acme: Persona, agent: Agent, reviewer: User_
) -> None:
    low = escalated_run(agent, priority="low")
    urgent = escalated_run(agent, message=ALWAYS_REVIEW, priority="critical")
    page = reviewer.get("/hitl/")
    assert page.status_code == 200
    ids = re.findall(rb'tr data-request-id="([^"]+)" data-run-id="([^"]+)"', page.content)
    assert [run_id.decode() for _, run_id in ids] == [str(urgent.pk), str(low.pk)]
    deadline = review_of(urgent).sla_deadline.isoformat().replace("+00:00", "Z")
    assert f'data-deadline="{deadline}"'.encode() in page.content

    item = review_of(low)
    detail = reviewer.get(f"/hitl/{item.pk}/")
    body = detail.content.decode()
    assert escape(item.question) in body
    assert item.proposed_answer
    assert escape(item.proposed_answer) in body
    assert f'data-testid="escalation-reason">{escape(item.escalation_reason)}<' in body
    assert f"{item.confidence:.3f}" in body
    assert item.sources, "the agent found the reset article"
    for source in item.sources:
        assert escape(source["title"]) in body
    for action in ("claim", "approve", "edit", "reject"):
        assert f'data-action="{action}"' in body
    assert 'textarea name="response"' in body
    assert 'textarea name="reason"' in body


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_claim_and_approve_resume_the_run(acme: Persona, agent: Agent, reviewer: User_) -> None:
    run = escalated_run(agent)
    item = review_of(run)
    assert _decide(reviewer, item.pk, action="claim").status_code == 302
    item.refresh_from_db()
    assert item.status == "assigned"
    assert item.assignee_id == reviewer.user.pk
    page = reviewer.get(f"/hitl/{item.pk}/")
    assert b'data-testid="request-assignee">rita<' in page.content
    assert _decide(reviewer, item.pk, action="approve").status_code == 302
    item.refresh_from_db()
    run.refresh_from_db()
    assert item.status == "approved"
    assert item.decided_by_id == reviewer.user.pk
    assert run.status == RunStatus.COMPLETED
    assert result_of(run)["content"] == item.proposed_answer
    assert result_of(run)["review"]["decision"] == "approve"
    # Gone from the queue, and a second decision is refused with nothing changed.
    assert str(item.pk) not in json.dumps(reviewer.get("/hitl/", fragment="rows").json())
    again = _decide(reviewer, item.pk, action="reject", reason="too late")
    assert again.status_code == 409
    item.refresh_from_db()
    assert item.status == "approved"


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_a_hand_off_draft_offers_no_approve_and_refuses_one(
    acme: Persona, agent: Agent, reviewer: User_
) -> None:
    """Issue 13, item 9: the draft of a question the agent cannot answer is its "a person
    will follow up" text. The page offers edit and reject only, says why, does not prefill
    the edit with it, and a posted approve is refused with nothing learnt."""
    from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER
    from learning.models import GoldenPath

    run = escalated_run(agent, message="the export button does nothing")
    item = review_of(run)
    assert item.proposed_answer == DONT_KNOW_ANSWER
    body = reviewer.get(f"/hitl/{item.pk}/").content.decode()
    assert 'data-action="approve"' not in body
    assert 'data-testid="no-approve" data-reason="dont_know"' in body
    assert "Nothing to approve" in body
    for action in ("edit", "reject"):
        assert f'data-action="{action}"' in body
    assert re.search(r'<textarea name="response" id="id_response" rows="6"></textarea>', body)

    refused = _decide(reviewer, item.pk, action="approve")
    assert refused.status_code == 422
    assert b"Nothing to approve" in refused.content
    item.refresh_from_db()
    assert (item.status, item.decision) == ("pending", "")
    assert not GoldenPath.unscoped.filter(agent=agent).exists()
    # A real draft keeps its Approve button.
    real = review_of(escalated_run(agent))
    assert 'data-action="approve"' in reviewer.get(f"/hitl/{real.pk}/").content.decode()


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_edit_and_reject_through_the_page(acme: Persona, agent: Agent, operator: User_) -> None:
    edited_run, rejected_run = escalated_run(agent), escalated_run(agent)
    edited, rejected = review_of(edited_run), review_of(rejected_run)

    # Bad input first (tried: an edit with an empty answer, a rejection without a reason,
    # an unknown action): the form says why and nothing changes.
    blank = _decide(operator, edited.pk, action="edit", response="   ")
    assert blank.status_code == 422
    assert b'data-field-error="response"' in blank.content
    silent = _decide(operator, rejected.pk, action="reject", reason="")
    assert silent.status_code == 422
    assert b'data-field-error="reason"' in silent.content
    assert _decide(operator, edited.pk, action="explode").status_code == 422
    for item in (edited, rejected):
        item.refresh_from_db()
        assert item.status == "pending"

    answer = "Open Settings, then Security, then Reset password. The link lasts 30 minutes."
    assert _decide(operator, edited.pk, action="edit", response=answer).status_code == 302
    edited.refresh_from_db()
    edited_run.refresh_from_db()
    assert edited.status == "edited"
    assert edited.response == answer
    assert edited_run.status == RunStatus.COMPLETED
    assert result_of(edited_run)["content"] == answer

    reason = "Refunds need a human look"
    assert _decide(operator, rejected.pk, action="reject", reason=reason).status_code == 302
    rejected.refresh_from_db()
    rejected_run.refresh_from_db()
    assert rejected.status == "rejected"
    assert rejected.reason == reason
    assert rejected_run.status == RunStatus.COMPLETED
    assert result_of(rejected_run)["review"]["decision"] == "reject"


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_another_reviewers_claim_is_respected(acme: Persona, agent: Agent, reviewer: User_) -> None:
    other = member(acme.tenant, "ralph", "reviewer")
    item = review_of(escalated_run(agent))
    assert _decide(other, item.pk, action="claim").status_code == 302
    refused = _decide(reviewer, item.pk, action="approve")
    assert refused.status_code == 409
    assert b"Another reviewer holds this request." in refused.content
    item.refresh_from_db()
    assert item.status == "assigned"
    assert item.assignee_id == other.user.pk


# --- agents ---


def test_agent_create_edit_and_upload(acme: Persona, agent: Agent, operator: User_) -> None:
    created = operator.post(
        "/agents/",
        {"name": "billing", "blueprint": "support_agent", "config": '{"default_threshold": 0.7}'},
    )
    assert created.status_code == 302
    billing = Agent.unscoped.get(tenant=acme.tenant, name="billing")
    assert created["Location"] == f"/agents/{billing.pk}/"
    assert billing.config["default_threshold"] == 0.7

    page = operator.get(f"/agents/{billing.pk}/")
    assert b'data-testid="agent-blueprint">support_agent<' in page.content
    assert b'data-testid="thresholds"' in page.content
    assert b"knowledge-upload-form" in page.content

    config = dict(billing.config, default_threshold=0.4)
    saved = operator.post(
        f"/agents/{billing.pk}/",
        {"form": "config", "name": "billing", "config": json.dumps(config)},
    )
    assert saved.status_code == 302
    billing.refresh_from_db()
    assert billing.config["default_threshold"] == 0.4
    assert billing.version == 2

    upload = SimpleUploadedFile("refunds.md", b"# Refunds\nRefunds take 5 days.", "text/markdown")
    added = operator.post(
        f"/agents/{billing.pk}/",
        {"form": "upload", "title": "", "file": upload, "content_type": "text/markdown"},
    )
    assert added.status_code == 302
    assert KnowledgeDocument.unscoped.filter(agent=billing, title="refunds.md").exists()
    pasted = operator.post(
        f"/agents/{billing.pk}/",
        {
            "form": "upload",
            "title": "Hours",
            "content": "We are open 9-5.",
            "content_type": "text/plain",
        },
    )
    assert pasted.status_code == 302
    assert b"Hours" in operator.get(f"/agents/{billing.pk}/").content


BAD_AGENTS = [
    # (what we tried, the form data, the field whose error must show)
    ("config that is not JSON", {"config": "{not json"}, "config"),
    ("config that is a list", {"config": "[1, 2]"}, "config"),
    ("a threshold the blueprint refuses", {"config": '{"default_threshold": 7}'}, "config"),
    ("an unknown config field", {"config": '{"no_such_setting": true}'}, "config"),
    ("an unknown blueprint", {"blueprint": "world_domination"}, "blueprint"),
    ("an empty name", {"name": "   "}, "name"),
]


@pytest.mark.parametrize(("tried", "data", "field"), BAD_AGENTS, ids=[b[0] for b in BAD_AGENTS])
def test_bad_agent_input_shows_errors_and_changes_nothing(
    acme: Persona, agent: Agent, owner: User_, tried: str, data: dict[str, str], field: str
) -> None:
    before = (Agent.unscoped.filter(tenant=acme.tenant).count(), audit_count(acme.tenant))
    form = {"name": "another", "blueprint": "support_agent", "config": "", **data}
    response = owner.post("/agents/", form)
    assert response.status_code == 422, tried
    assert b'data-testid="field-error"' in response.content or b"form-errors" in response.content
    assert f'data-field-error="{field}"'.encode() in response.content, tried
    assert (Agent.unscoped.filter(tenant=acme.tenant).count(), audit_count(acme.tenant)) == before

    edit = {"form": "config", "name": agent.name, "config": form["config"] or "{}"}
    if field == "config":
        changed = owner.post(f"/agents/{agent.pk}/", edit)
        assert changed.status_code == 422
        assert b'data-field-error="config"' in changed.content
        agent.refresh_from_db()
        assert agent.version == 1


def test_duplicate_agent_names_and_bad_uploads_are_refused(
    acme: Persona, agent: Agent, owner: User_
) -> None:
    before = audit_count(acme.tenant)
    duplicate = owner.post("/agents/", {"name": agent.name, "blueprint": "support_agent"})
    assert duplicate.status_code == 422
    assert b"already exists" in duplicate.content
    documents = KnowledgeDocument.unscoped.filter(agent=agent).count()
    # Tried: nothing at all, a file that is not UTF-8, a PDF content type, only whitespace.
    bad_uploads: list[dict[str, Any]] = [
        {"form": "upload", "content_type": "text/plain"},
        {
            "form": "upload",
            "file": SimpleUploadedFile("x.txt", b"\xff\xfe\x00bad", "text/plain"),
            "content_type": "text/plain",
        },
        {"form": "upload", "title": "t", "content": "hello", "content_type": "application/pdf"},
        {"form": "upload", "title": "t", "content": "   \n ", "content_type": "text/plain"},
    ]
    for data in bad_uploads:
        response = owner.post(f"/agents/{agent.pk}/", data)
        assert response.status_code == 422, data
        assert b"errorlist" in response.content
    assert KnowledgeDocument.unscoped.filter(agent=agent).count() == documents
    assert audit_count(acme.tenant) == before


# --- tenants and keys ---


def test_a_new_key_is_shown_once_and_works(acme: Persona, owner: User_) -> None:
    page = f"/tenants/{acme.tenant.pk}/"
    created = owner.post(page, {"action": "create_key", "name": "ci", "scopes": ["read"]})
    assert created.status_code == 201
    match = NEW_KEY.search(created.content)
    assert match, "the key is on the page"
    plaintext = match.group(1).decode()
    listed = Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {plaintext}"})
    assert listed.status_code == 200
    again = owner.get(page)
    assert plaintext.encode() not in again.content
    assert b'data-testid="new-key"' not in again.content
    with tenant_scope(acme.tenant.pk):
        key = APIKey.objects.get(name="ci")
    assert key.scopes == ["read"]
    assert key.created_by_id == owner.user.pk

    rotated = owner.post(page, {"action": "rotate", "key_id": key.pk})
    assert rotated.status_code == 201
    replacement = NEW_KEY.search(rotated.content)
    assert replacement
    assert replacement.group(1).decode() != plaintext
    dead = Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {plaintext}"})
    assert dead.status_code == 401
    new_key = replacement.group(1).decode()
    with tenant_scope(acme.tenant.pk):
        new_row = APIKey.objects.get(name="ci", revoked_at__isnull=True)
    assert owner.post(page, {"action": "revoke", "key_id": new_row.pk}).status_code == 302
    revoked = Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {new_key}"})
    assert revoked.status_code == 401


def test_bad_key_and_tenant_input_changes_nothing(
    acme: Persona, operator: User_, admin: User_
) -> None:
    page = f"/tenants/{acme.tenant.pk}/"
    with tenant_scope(acme.tenant.pk):
        keys = APIKey.objects.count()
        admin_key = APIKey.objects.get()  # the persona's key holds every scope, admin too
    before = audit_count(acme.tenant)
    # Tried: no name, no scopes, a scope that does not exist, and an operator minting an
    # admin-scoped key (more than the operator role itself may do).
    for data in (
        {"action": "create_key", "name": "", "scopes": ["read"]},
        {"action": "create_key", "name": "k"},
        {"action": "create_key", "name": "k", "scopes": ["root"]},
        {"action": "create_key", "name": "k", "scopes": ["read", "admin"]},
    ):
        response = operator.post(page, data)
        assert response.status_code == 422, data
        assert b'data-testid="new-key"' not in response.content
    # An operator may not rotate (and so read) or revoke a key holding the admin scope.
    assert operator.post(page, {"action": "rotate", "key_id": admin_key.pk}).status_code == 403
    assert operator.post(page, {"action": "revoke", "key_id": admin_key.pk}).status_code == 403
    assert operator.post(page, {"action": "revoke", "key_id": "x'; DROP"}).status_code == 404
    with tenant_scope(acme.tenant.pk):
        assert APIKey.objects.count() == keys
        assert APIKey.objects.filter(revoked_at__isnull=False).count() == 0
    assert audit_count(acme.tenant) == before

    tenants = Tenant.objects.count()
    # Tried: an empty name, a slug already taken, an unknown tier, a slug with spaces.
    for data in (
        {"name": "", "tier": "free"},
        {"name": "Acme Again", "slug": acme.tenant.slug, "tier": "free"},
        {"name": "Tiered", "tier": "platinum"},
        {"name": "Spaced", "slug": "has spaces", "tier": "free"},
    ):
        response = admin.post("/tenants/", data)
        assert response.status_code == 422, data
        assert b"errorlist" in response.content
    assert Tenant.objects.count() == tenants


# --- overview and audit ---


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_overview_counts_and_quota_gauges(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_, admin: User_
) -> None:
    escalated_run(agent)
    escalated_run(foreign_agent)
    escalated_run(foreign_agent)
    page = owner.get("/")
    for metric in ("runs-per-minute", "escalation-rate", "cost-today", "open-hitl", "breaches"):
        assert f'data-metric="{metric}"'.encode() in page.content
    for quota in ("runs_per_month", "tokens_per_month", "dollars_per_month", "agents"):
        assert f'data-quota="{quota}"'.encode() in page.content
    mine = owner.get("/", fragment="metrics").json()
    assert mine["metrics"]["open_hitl"] == 1
    assert mine["metrics"]["runs_window"] == 1
    assert mine["metrics"]["escalation_rate"] == 1.0
    gauges = {g["name"]: g for g in mine["quotas"]}
    assert gauges["agents"]["used"] == "1"
    assert gauges["agents"]["limit"] == str(acme.tenant.quotas.agents)

    everything = admin.get("/", fragment="metrics").json()
    assert everything["metrics"]["open_hitl"] == 3
    per_tenant = {row["id"]: row["metrics"]["open_hitl"] for row in everything["tenants"]}
    assert per_tenant == {acme.tenant.pk: 1, globex.tenant.pk: 2}
    assert b'data-testid="tenants-overview"' in admin.get("/").content


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_audit_trail_filters_pages_and_chain_status(
    acme: Persona, agent: Agent, owner: User_
) -> None:
    escalated_run(agent)
    for index in range(30):  # enough for a second page of 25
        append(
            tenant_id=acme.tenant.pk,
            actor=Actor.system("tests"),
            action="probe.appended",
            target_type="probe",
            target_id=index,
        )
    page = owner.get("/audit/")
    assert page.status_code == 200
    assert b'data-testid="chain-status">valid<' in page.content
    total = AuditEvent.unscoped.filter(tenant=acme.tenant).count()
    assert f"{total} events".encode() in page.content
    filtered = owner.get("/audit/", action="hitl.*")
    actions = re.findall(rb'data-field="action">([^<]+)<', filtered.content)
    assert actions
    assert all(a.startswith(b"hitl.") for a in actions)
    exact = owner.get("/audit/", action="agent.created")
    assert re.findall(rb'data-field="action">([^<]+)<', exact.content) == [b"agent.created"]
    second = owner.get("/audit/", page="2")
    assert second.status_code == 200
    assert b"page 2 of" in second.content
    bad = owner.get("/audit/", since="not a date", until="")
    assert bad.status_code == 400
    assert b'data-field-error="since"' in bad.content

    # Tamper with the chain behind the append-only trigger's back: the page says broken.
    with as_attacker() as cursor:  # a raw statement: the app's own role may not update
        event = AuditEvent.unscoped.filter(tenant=acme.tenant).order_by("sequence")[1]
        cursor.execute(
            "UPDATE governance_auditevent SET action = 'forged' WHERE id = %s", [event.pk]
        )
    broken = owner.get("/audit/")
    assert b'data-testid="chain-status">broken<' in broken.content
    assert b"hash_mismatch at event #2" in broken.content


def test_html_not_found_for_unknown_runs(owner: User_) -> None:
    response = owner.get("/runs/11111111-1111-1111-1111-111111111111/")
    assert response.status_code == 404
    assert b'data-testid="error-page"' in response.content
