"""Webhook endpoints over the API: created with a secret shown once, listed, rotated with an
overlap window, deleted; secrets are stored encrypted and never audited or listed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from governance.models import AuditEvent
from learning.models import WebhookEndpoint
from learning.webhooks import secrets
from tenants import services as tenant_services
from tenants.models import Role
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.api.test_bad_input import assert_error, assert_field_errors, nothing_written
from tests.platform.learning.conftest import Sender, ticket_payload

ENDPOINTS = "/api/v1/webhooks/endpoints"


def _create(persona: Persona, **body: Any) -> dict[str, Any]:
    response = persona.post(ENDPOINTS, {"provider": "generic", **body})
    assert response.status_code == 201, response.content
    return dict(response.json())


def _sender(persona: Persona, created: dict[str, Any], secret: str) -> Sender:
    return Sender(persona, created["provider"], created["id"], secret)


def test_a_generated_secret_is_shown_once_and_stored_encrypted(owner: Persona) -> None:
    created = _create(owner, name="helpdesk")
    secret = created["secret"]
    assert len(secret) >= 32
    assert created["url"] == f"http://testserver/api/v1/webhooks/generic/{created['id']}"
    row = WebhookEndpoint.unscoped.get(pk=created["id"])
    assert secret not in row.secret_encrypted
    assert secrets.decrypt(row.secret_encrypted) == secret
    listed = owner.get(ENDPOINTS)
    detail = owner.get(f"{ENDPOINTS}/{created['id']}")
    for response in (listed, detail):
        assert response.status_code == 200
        assert secret not in response.content.decode()
        assert "secret" not in json.dumps(response.json()).replace("previous_secret_expires_at", "")
    audit = AuditEvent.unscoped.get(tenant=owner.tenant, action="webhook_endpoint.created")
    assert secret not in json.dumps(audit.changes)
    assert _sender(owner, created, secret).deliver(ticket_payload("generic")).status_code == 202


def test_a_given_secret_is_used_and_not_echoed(owner: Persona) -> None:
    slack_secret = "8f742231b10e8888abcd99yyyzzz85a5"
    created = _create(owner, provider="slack", secret=slack_secret)
    assert created["secret"] is None
    assert _sender(owner, created, slack_secret).deliver(ticket_payload("slack")).status_code == 202


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "github"}, "provider"),
        ({"provider": "generic", "secret": "short"}, "secret"),
        ({"provider": "generic", "secret": "has spaces in the secret text"}, "secret"),
        ({"provider": "generic", "secret": "caf\u00e9-is-not-ascii-enough!!"}, "secret"),
        ({"provider": "generic", "secret": 12345678901234567}, "secret"),
        ({"provider": "generic", "url": "http://evil"}, "url"),
    ],
    ids=["provider", "short", "spaces", "non-ascii", "number", "unknown-field"],
)
def test_bad_endpoint_requests_are_422(owner: Persona, body: dict[str, Any], field: str) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(owner.post(ENDPOINTS, body), field)


def test_rotation_keeps_the_old_secret_valid_for_the_overlap(owner: Persona) -> None:
    created = _create(owner)
    old = created["secret"]
    rotated = owner.post(f"{ENDPOINTS}/{created['id']}/rotate", {"overlap_seconds": 600})
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()["secret"]
    assert new
    assert new != old
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)

    # Distinct events (the same signed content again would be a replay, deduplicated).
    def event(n: int) -> dict[str, Any]:
        return ticket_payload("generic", ticket=str(2000 + n))

    assert _sender(owner, created, new).deliver(event(1), delivery_id="a").status_code == 202
    assert _sender(owner, created, old).deliver(event(2), delivery_id="b").status_code == 202
    # The overlap ends: the old secret stops verifying, the new one keeps working.
    WebhookEndpoint.unscoped.filter(pk=created["id"]).update(
        previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert_error(_sender(owner, created, old).deliver(event(3), delivery_id="c"), 401)
    assert _sender(owner, created, new).deliver(event(4), delivery_id="d").status_code == 202


def test_rotation_without_overlap_retires_the_old_secret_at_once(owner: Persona) -> None:
    created = _create(owner)
    chosen = "a-brand-new-secret-of-ours-0123456789"
    rotated = owner.post(
        f"{ENDPOINTS}/{created['id']}/rotate", {"overlap_seconds": 0, "secret": chosen}
    ).json()
    assert rotated["secret"] is None
    assert rotated["previous_secret_expires_at"] is None
    payload = ticket_payload("generic")
    assert_error(_sender(owner, created, created["secret"]).deliver(payload), 401)
    assert _sender(owner, created, chosen).deliver(payload).status_code == 202
    audit = AuditEvent.unscoped.get(tenant=owner.tenant, action="webhook_endpoint.rotated")
    assert audit.changes == {"overlap_seconds": 0, "secret_generated": False}


def test_a_deleted_endpoint_refuses_deliveries(owner: Persona) -> None:
    created = _create(owner)
    assert owner.delete(f"{ENDPOINTS}/{created['id']}").status_code == 204
    assert_error(owner.get(f"{ENDPOINTS}/{created['id']}"), 404, "not_found")
    assert_error(_sender(owner, created, created["secret"]).deliver(ticket_payload("generic")), 401)


def test_only_admins_manage_endpoints(owner: Persona) -> None:
    """Secrets are tenant administration: an operator may list endpoints but not create,
    rotate or delete them."""
    created = _create(owner)
    user = get_user_model().objects.create_user("operator-olga")
    tenant_services.add_member(actor=ACTOR, tenant=owner.tenant, user=user, role=Role.OPERATOR)
    client = Client()
    client.force_login(user)
    assert client.get(ENDPOINTS).status_code == 200
    with nothing_written(owner.tenant):
        for method, path in (
            ("post", ENDPOINTS),
            ("post", f"{ENDPOINTS}/{created['id']}/rotate"),
            ("delete", f"{ENDPOINTS}/{created['id']}"),
        ):
            response = getattr(client, method)(
                path, {"provider": "generic"}, content_type="application/json"
            )
            assert_error(response, 403, "permission_denied")
