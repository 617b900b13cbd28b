"""Personas for API tests (ARCHITECTURE habit 9): an owner tenant and an outsider tenant."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from agentflow.models import Agent
from governance.audit import Actor
from tenants import services
from tenants.context import tenant_scope
from tenants.models import Tenant

ACTOR = Actor.system("tests")

SUPPORT_CONFIG: dict[str, Any] = {
    "intent_categories": [
        {
            "name": "PASSWORD_RESET",
            "description": "Resetting or changing a password",
            "examples": [
                "how do I reset my password",
                "I forgot my password",
                "password reset link does not work",
                "change my password",
            ],
        },
        {
            "name": "BILLING",
            "description": "Invoices, charges and refunds",
            "examples": ["I was charged twice", "where is my invoice", "I want a refund"],
        },
        {
            "name": "HUMAN_AGENT",
            "description": "Wants a person",
            "examples": ["I want to talk to a human", "let me speak to a person"],
            "threshold": 0.0,
        },
    ],
    "default_threshold": 0.5,
}
KNOWLEDGE = (
    (
        "Resetting your password",
        "To reset your password, open Settings, choose Security and click 'Reset password'. "
        "We email you a link that is valid for 30 minutes.",
    ),
    (
        "Refunds",
        "Refunds are issued to the original card within 5 business days. "
        "You can request a refund from the Billing page.",
    ),
)


@dataclass
class Persona:
    tenant: Tenant
    key: str
    client: Client

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(headers), **kw)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> Any:
        return self.client.post(
            path,
            body if body is not None else {},
            content_type=kw.pop("content_type", "application/json"),
            headers=self._headers(headers),
            **kw,
        )

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.client.patch(
            path, body, content_type="application/json", headers=self._headers(headers)
        )

    def delete(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.delete(path, headers=self._headers(headers))


def make_persona(name: str, **tenant_kwargs: Any) -> Persona:
    tenant = services.create_tenant(actor=ACTOR, name=name, **tenant_kwargs)
    issued = services.issue_key(actor=ACTOR, tenant=tenant)
    return Persona(tenant, issued.plaintext, Client())


def make_agent(persona: Persona, name: str = "support") -> Agent:
    from agentflow import knowledge
    from agentflow.services import create_agent

    agent = create_agent(
        actor=ACTOR,
        tenant=persona.tenant,
        name=name,
        blueprint="support_agent",
        config=SUPPORT_CONFIG,
    )
    with tenant_scope(persona.tenant.pk):
        for title, text in KNOWLEDGE:
            knowledge.ingest_document(
                agent=agent, title=title, content_type="text/markdown", text=text
            )
    return agent


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def outsider(db: None) -> Persona:
    return make_persona("Globex", tier="professional")


@pytest.fixture
def agent(owner: Persona) -> Agent:
    return make_agent(owner)


def decide_concurrently(persona: Persona, request_id: Any, body: dict[str, Any]) -> list[int]:
    """Two clients post the same decision on a review request at the same instant (each
    thread on its own connection); their status codes, sorted."""
    start = threading.Barrier(2)
    codes: list[int] = []

    def decide() -> None:
        client = Client()
        start.wait()
        try:
            response = client.post(
                f"/api/v1/hitl/queue/{request_id}/respond",
                body,
                content_type="application/json",
                headers={"Authorization": f"Bearer {persona.key}"},
            )
            codes.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=decide) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(codes)
