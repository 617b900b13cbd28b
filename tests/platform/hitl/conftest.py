"""Personas and helpers for the review queue: tenants with reviewers, runs that escalate."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from agentflow import services as run_services
from agentflow.models import Agent, AgentSession, Run
from governance.models import AuditEvent
from hitl.models import HITLRequest
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import Tenant
from tests.platform.api.conftest import ACTOR, Persona, make_agent, make_persona

QUEUE = "/api/v1/hitl/queue"
# Messages the support agent of tests.platform.api.conftest escalates, and why.
LOW_CONFIDENCE = "my password and my refund and the weather"  # proposes the reset article
ALWAYS_REVIEW = "I want to talk to a human"  # HUMAN_AGENT has threshold 0.0


@dataclass
class Member:
    """A signed-in dashboard user with a role in one tenant."""

    user: User
    role: str
    tenant: Tenant
    client: Client

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params)

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return self.client.post(
            path,
            json.dumps(body if body is not None else {}),
            content_type="application/json",
            headers=headers,
        )

    def claim(self, request_id: Any) -> Any:
        return self.post(f"{QUEUE}/{request_id}/claim")

    def respond(self, request_id: Any, **body: Any) -> Any:
        return self.post(f"{QUEUE}/{request_id}/respond", body)


def make_member(tenant: Tenant, username: str, role: str, *, email: str | None = None) -> Member:
    user: User = get_user_model().objects.create_user(
        username, email=email if email is not None else f"{username}@example.com"
    )
    tenant_services.add_member(actor=ACTOR, tenant=tenant, user=user, role=role)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return Member(user=user, role=role, tenant=tenant, client=client)


def run_in_own_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """For async tests: a sync helper that runs a pipeline gets a thread of its own.

    The pipeline's stores use thread-sensitive ``sync_to_async`` on their own event loop;
    inside the test's thread-sensitive executor that would deadlock (asgiref refuses it,
    and the run fails with a PersistenceError instead of quietly losing its session).
    """
    return sync_to_async(function, thread_sensitive=False)


def escalated_run(agent: Agent, message: str = LOW_CONFIDENCE, **run_fields: Any) -> Run:
    """A real run through the real (offline) pipeline in this thread, settled awaiting review
    with its review request queued (no Celery worker needed)."""
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer-1")
        run = Run.objects.create(
            agent=agent, session=session, user_id=session.user_id, input=message, **run_fields
        )
        run_services.execute_run(str(run.pk))
        run.refresh_from_db()
    return run


def review_of(run: Run) -> HITLRequest:
    return HITLRequest.unscoped.select_related("assignee").get(run=run)


def audit_actions(tenant: Tenant) -> Counter[str]:
    """How many audit events of each action the tenant's chain holds."""
    with tenant_scope(tenant.pk):
        return Counter(AuditEvent.unscoped.filter(tenant=tenant).values_list("action", flat=True))


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (work done by a Celery worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def outsider(db: None) -> Persona:
    return make_persona("Globex", tier="professional")


@pytest.fixture
def agent(owner: Persona) -> Agent:
    return make_agent(owner)


@pytest.fixture
def reviewer(owner: Persona) -> Member:
    return make_member(owner.tenant, "rita", "reviewer")


@pytest.fixture
def operator(owner: Persona) -> Member:
    return make_member(owner.tenant, "otto", "operator")
