"""The admin lists every tenant's rows for platform admins (through the loud bypass)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from governance.audit import Actor
from tenants import services

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tenants/tenant/",
        "/admin/tenants/apikey/",
        "/admin/tenants/membership/",
        "/admin/tenants/usageday/",
        "/admin/agentflow/agent/",
        "/admin/agentflow/run/",
        "/admin/agentflow/knowledgedocument/",
        "/admin/governance/auditevent/",
    ],
)
def test_admin_changelists_render(path: str) -> None:
    for name in ("Acme", "Globex"):
        tenant = services.create_tenant(actor=Actor.system("t"), name=name)
        services.issue_key(actor=Actor.system("t"), tenant=tenant)
    admin = get_user_model().objects.create_superuser("root", "", "pw-root-123!")
    client = Client()
    client.force_login(admin)
    response = client.get(path)
    assert response.status_code == 200
    if path == "/admin/tenants/apikey/":
        assert response.content.count(b"af_") == 0  # only prefixes, never a key
        assert b"acme" in response.content
        assert b"globex" in response.content
