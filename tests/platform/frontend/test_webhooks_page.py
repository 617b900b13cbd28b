"""/webhooks/ (issue 19): endpoints and recent deliveries for every reader; owners create,
rotate and delete through the API's own service functions; bad input changes nothing."""

from __future__ import annotations

import pytest

from learning.models import WebhookEndpoint
from learning.webhooks import secrets
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.hitl.conftest import audit_actions
from tests.platform.learning.conftest import make_sender, ticket_payload

ROLES = ("viewer", "reviewer", "operator", "owner")


def endpoints(persona: Persona) -> list[WebhookEndpoint]:
    with tenant_scope(persona.tenant.pk):
        return list(WebhookEndpoint.objects.order_by("created_at"))


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_only_owners_change(acme: Persona, role: str) -> None:
    user = member(acme.tenant, f"w-{role}", role)
    sender = make_sender(acme, "generic")
    page = user.get("/webhooks/")
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-endpoint-id="{sender.endpoint_id}"' in body
    assert f"/api/v1/webhooks/generic/{sender.endpoint_id}" in body
    assert sender.secret not in body  # a secret is never shown again
    assert 'data-nav="webhooks"' in body
    owner = role == "owner"
    assert ('data-testid="webhook-create-form"' in body) is owner
    assert ('data-action="rotate"' in body) is owner
    before = endpoints(acme)[0].secret_encrypted
    for data in (
        {"action": "create", "provider": "slack", "name": "x"},
        {"action": "rotate", "endpoint_id": sender.endpoint_id},
        {"action": "delete", "endpoint_id": sender.endpoint_id},
    ):
        answer = user.post("/webhooks/", data)
        assert answer.status_code in ((201, 302) if owner else (403,)), (role, data)
    if not owner:
        (kept,) = endpoints(acme)
        assert kept.secret_encrypted == before


def test_owner_creates_rotates_and_deletes_with_the_secret_shown_once(
    acme: Persona, owner: User_
) -> None:
    created = owner.post("/webhooks/", {"action": "create", "provider": "zendesk", "name": "ZD"})
    assert created.status_code == 201
    (endpoint,) = endpoints(acme)
    secret = secrets.decrypt(endpoint.secret_encrypted)
    assert f'data-testid="secret">{secret}<' in created.content.decode()
    assert secret not in owner.get("/webhooks/").content.decode()

    rotated = owner.post(
        "/webhooks/", {"action": "rotate", "endpoint_id": endpoint.pk, "overlap_seconds": "60"}
    )
    assert rotated.status_code == 201
    (endpoint,) = endpoints(acme)
    assert secrets.decrypt(endpoint.secret_encrypted) != secret
    assert secrets.decrypt(endpoint.previous_secret_encrypted) == secret
    assert "old secret valid until" in owner.get("/webhooks/").content.decode()

    own = "provider-secret-0123456789"
    given = owner.post(
        "/webhooks/", {"action": "create", "provider": "slack", "name": "S", "secret": own}
    )
    assert given.status_code == 302  # nothing generated, nothing to show once
    assert (
        owner.post("/webhooks/", {"action": "delete", "endpoint_id": endpoint.pk}).status_code
        == 302
    )
    (left,) = endpoints(acme)
    assert left.provider == "slack"
    assert secrets.decrypt(left.secret_encrypted) == own
    actions = audit_actions(acme.tenant)
    for action in ("created", "rotated", "deleted"):
        assert actions[f"webhook_endpoint.{action}"] >= 1, action


def test_bad_input_is_refused_on_the_form_and_changes_nothing(
    acme: Persona, globex: Persona, owner: User_
) -> None:
    sender = make_sender(acme, "generic")
    foreign = make_sender(globex, "generic")
    before = [(e.pk, e.secret_encrypted) for e in endpoints(acme)]
    cases = [
        ({"action": "create", "provider": "fax"}, 422, "provider"),
        ({"action": "create", "provider": "slack", "secret": "short"}, 422, "secret"),
        ({"action": "create", "provider": "slack", "secret": "has space " * 3}, 422, "secret"),
        ({"action": "create", "provider": "slack", "name": "n" * 201}, 422, "name"),
        (
            {"action": "rotate", "endpoint_id": sender.endpoint_id, "overlap_seconds": "-1"},
            422,
            "overlap_seconds",
        ),
        ({"action": "rotate", "endpoint_id": "not-a-uuid"}, 404, None),
        ({"action": "delete", "endpoint_id": foreign.endpoint_id}, 404, None),
        ({"action": "rotate", "endpoint_id": foreign.endpoint_id}, 404, None),
        ({"action": "explode"}, 422, None),
    ]
    for data, status, field in cases:
        answer = owner.post("/webhooks/", data)
        assert answer.status_code == status, data
        if field:
            assert f'data-field-error="{field}"'.encode() in answer.content, data
    assert [(e.pk, e.secret_encrypted) for e in endpoints(acme)] == before
    assert len(endpoints(globex)) == 1


def test_another_tenants_operator_sees_none_of_it(acme: Persona, globex: Persona) -> None:
    sender = make_sender(acme, "generic")
    outsider = member(globex.tenant, "gus", "operator")
    page = outsider.get("/webhooks/").content.decode()
    assert sender.endpoint_id not in page
    assert 'data-testid="endpoints-empty"' in page


def test_recent_deliveries_show_their_verdict(acme: Persona, viewer: User_) -> None:
    sender = make_sender(acme, "generic")
    assert sender.deliver(ticket_payload("generic"), delivery_id="dlv-42").status_code == 202
    assert sender.deliver(ticket_payload("generic"), delivery_id="dlv-42").status_code in (200, 202)
    page = viewer.get("/webhooks/").content.decode()
    row = page.split('data-delivery-id="dlv-42"', 1)[1].split("</tr>", 1)[0]
    assert "ticket.created" in row
    assert 'data-label="Attempts" class="num">2<' in row  # the retry counted, stored once
    assert "accepted · waiting" in row
    assert 'data-testid="deliveries-empty"' not in page
