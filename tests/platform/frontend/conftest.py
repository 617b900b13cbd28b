"""Dashboard users: tenants with members of every role, a platform admin, signed-in clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import Client

from agentflow.models import Agent
from tenants import services as tenant_services
from tenants.models import Tenant
from tests.platform.api.conftest import ACTOR, Persona, make_agent, make_persona

PASSWORD = "correct-horse-battery-9"


@dataclass
class User_:
    user: User
    client: Client

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.post(path, data or {}, **kw)


def make_user(username: str, *, superuser: bool = False) -> User:
    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    return model.objects.create_user(username, f"{username}@example.com", PASSWORD)


def signed_in(user: User, **client_kwargs: Any) -> User_:
    client = Client(raise_request_exception=True, **client_kwargs)
    client.force_login(user)
    return User_(user, client)


def member(tenant: Tenant, username: str, role: str) -> User_:
    user = make_user(username)
    tenant_services.add_member(actor=ACTOR, tenant=tenant, user=user, role=role)
    return signed_in(user)


@pytest.fixture
def acme(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def globex(db: None) -> Persona:
    return make_persona("Globex", tier="professional")


@pytest.fixture
def agent(acme: Persona) -> Agent:
    return make_agent(acme)


@pytest.fixture
def foreign_agent(globex: Persona) -> Agent:
    return make_agent(globex, name="globex-support")


@pytest.fixture
def owner(acme: Persona) -> User_:
    return member(acme.tenant, "olivia", "owner")


@pytest.fixture
def operator(acme: Persona) -> User_:
    return member(acme.tenant, "otto", "operator")


@pytest.fixture
def reviewer(acme: Persona) -> User_:
    return member(acme.tenant, "rita", "reviewer")


@pytest.fixture
def viewer(acme: Persona) -> User_:
    return member(acme.tenant, "vic", "viewer")


@pytest.fixture
def admin(db: None) -> User_:
    return signed_in(make_user("root", superuser=True))
