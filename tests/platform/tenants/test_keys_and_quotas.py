"""API keys (shown once, hashed, revocable, rotatable) and tenant services."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import call_command

from governance.audit import Actor
from governance.models import AuditEvent
from tenants import services
from tenants.keys import hash_secret, parse_key
from tenants.models import APIKey, Tenant, TenantStatus
from tenants.quotas import TIER_DEFAULTS

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")


@pytest.fixture
def tenant() -> Tenant:
    return services.create_tenant(actor=ACTOR, name="Acme Corp", tier="starter")


def test_key_is_shown_once_and_stored_hashed(tenant: Tenant) -> None:
    issued = services.issue_key(actor=ACTOR, tenant=tenant, name="ci")
    assert issued.plaintext.startswith("af_")
    stored = APIKey.unscoped.get(pk=issued.key.pk)
    prefix, secret = parse_key(issued.plaintext)  # type: ignore[misc]
    assert stored.prefix == prefix
    assert stored.secret_hash == hash_secret(secret)
    assert secret not in json.dumps(list(APIKey.unscoped.values()), default=str), (
        "the secret must never be stored"
    )
    assert services.authenticate_key(issued.plaintext).pk == stored.pk


@pytest.mark.parametrize(
    "presented",
    ["", "af_", "sk-abc", "af_short_x", "af_0123456789ab_", "af_0123456789ab_wrongsecret"],
)
def test_bad_keys_are_rejected(tenant: Tenant, presented: str) -> None:
    services.issue_key(actor=ACTOR, tenant=tenant)
    with pytest.raises(services.KeyRejected):
        services.authenticate_key(presented)


def test_revoked_key_and_suspended_tenant_stop_at_once(tenant: Tenant) -> None:
    first = services.issue_key(actor=ACTOR, tenant=tenant)
    second = services.issue_key(actor=ACTOR, tenant=tenant)
    services.revoke_key(actor=ACTOR, key=first.key)
    with pytest.raises(services.KeyRejected, match="revoked"):
        services.authenticate_key(first.plaintext)
    services.set_status(actor=ACTOR, tenant=tenant, status=TenantStatus.SUSPENDED)
    with pytest.raises(services.KeyRejected) as rejected:
        services.authenticate_key(second.plaintext)
    assert rejected.value.error_type == "tenant_inactive"
    services.set_status(actor=ACTOR, tenant=tenant, status=TenantStatus.ACTIVE)
    assert services.authenticate_key(second.plaintext).pk == second.key.pk


def test_rotation_with_overlap_keeps_the_old_key_until_it_expires(tenant: Tenant) -> None:
    old = services.issue_key(actor=ACTOR, tenant=tenant, name="svc", scopes=["read"])
    new = services.rotate_key(actor=ACTOR, key=old.key, overlap=timedelta(hours=1))
    assert new.key.scopes == ["read"]
    assert services.authenticate_key(old.plaintext).pk == old.key.pk
    assert services.authenticate_key(new.plaintext).pk == new.key.pk
    immediate = services.rotate_key(actor=ACTOR, key=new.key)
    with pytest.raises(services.KeyRejected):
        services.authenticate_key(new.plaintext)
    assert services.authenticate_key(immediate.plaintext)


def test_quota_overrides_are_validated(tenant: Tenant) -> None:
    updated = services.update_quotas(
        actor=ACTOR, tenant=tenant, tier=None, overrides={"runs_per_month": 7}
    )
    assert updated.quotas.runs_per_month == 7
    assert updated.quotas.agents == TIER_DEFAULTS["starter"].agents
    for bad in ({"runs_per_month": -1}, {"no_such_quota": 1}):
        with pytest.raises(services.TenantError):
            services.update_quotas(actor=ACTOR, tenant=tenant, tier=None, overrides=bad)
    tenant.refresh_from_db()
    assert tenant.quota_overrides == {"runs_per_month": 7}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "  "}, "empty"),
        ({"name": "x", "tier": "gold"}, "unknown tier"),
        ({"name": "!!!"}, "letters"),
    ],
)
def test_bad_tenant_input_changes_nothing(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(services.TenantError, match=message):
        services.create_tenant(actor=ACTOR, **kwargs)
    assert Tenant.objects.count() == 0


def test_duplicate_slug_is_refused(tenant: Tenant) -> None:
    with pytest.raises(services.TenantError, match="already exists"):
        services.create_tenant(actor=ACTOR, name="Acme Corp")


def test_every_write_is_audited_in_a_chain(tenant: Tenant) -> None:
    issued = services.issue_key(actor=ACTOR, tenant=tenant)
    services.revoke_key(actor=ACTOR, key=issued.key)
    events = list(AuditEvent.unscoped.filter(tenant=tenant).order_by("sequence"))
    assert [e.action for e in events] == ["tenant.created", "api_key.issued", "api_key.revoked"]
    assert [e.sequence for e in events] == [1, 2, 3]
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(events))


def test_management_command_prints_one_json_object() -> None:
    out = StringIO()
    call_command("tenants", "create", "Initech", "--tier", "professional", stdout=out)
    created = json.loads(out.getvalue())
    assert created["slug"] == "initech"
    assert created["tier"] == "professional"
    assert services.authenticate_key(created["api_key"]).tenant_id == created["tenant_id"]
    out = StringIO()
    call_command("tenants", "key", "initech", stdout=out)
    again = json.loads(out.getvalue())
    assert again["tenant_id"] == created["tenant_id"]
    assert again["api_key"] != created["api_key"]
