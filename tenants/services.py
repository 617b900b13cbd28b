"""Every write to tenants, memberships and keys, with its audit event (ARCHITECTURE habit 2)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils.text import slugify

from agentflow.core.rows import unique_or_none
from governance.audit import Actor, append
from tenants.context import tenant_scope
from tenants.keys import generate_key, parse_key, secret_matches
from tenants.models import APIKey, APIKeyScope, Membership, Role, Tenant, TenantStatus, UsageDay
from tenants.quotas import TIER_DEFAULTS, Tier

ALL_SCOPES = [APIKeyScope.READ.value, APIKeyScope.WRITE.value, APIKeyScope.ADMIN.value]


class TenantError(ValueError):
    """A request about tenants that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class IssuedKey:
    key: APIKey
    plaintext: str


def _validate_tier(tier: str) -> str:
    if tier not in TIER_DEFAULTS:
        raise TenantError(f"unknown tier {tier!r}; use one of {', '.join(Tier.ALL)}")
    return tier


def create_tenant(
    *,
    actor: Actor,
    name: str,
    tier: str = Tier.FREE,
    slug: str | None = None,
    status: str = TenantStatus.ACTIVE,
    quota_overrides: dict[str, Any] | None = None,
) -> Tenant:
    name = name.strip()
    if not name:
        raise TenantError("name must not be empty")
    slug = slugify(slug or name)[:80]
    if not slug:
        raise TenantError("name or slug must contain letters or digits")
    overrides = quota_overrides or {}
    try:
        TIER_DEFAULTS[_validate_tier(tier)].with_overrides(overrides)
    except ValueError as exc:
        raise TenantError(str(exc)) from exc
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(
                name=name, slug=slug, tier=tier, status=status, quota_overrides=overrides
            )
            append(
                tenant_id=tenant.pk,
                actor=actor,
                action="tenant.created",
                target_type="tenant",
                target_id=tenant.pk,
                changes={"name": name, "slug": slug, "tier": tier, "status": status},
            )
    except IntegrityError as exc:
        raise TenantError(f"a tenant with slug {slug!r} already exists") from exc
    return tenant


def set_status(*, actor: Actor, tenant: Tenant, status: str) -> Tenant:
    if status not in TenantStatus.values:
        raise TenantError(f"unknown status {status!r}")
    with transaction.atomic():
        previous = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk).status
        Tenant.objects.filter(pk=tenant.pk).update(status=status)
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action=f"tenant.{status}" if status != TenantStatus.ACTIVE else "tenant.activated",
            target_type="tenant",
            target_id=tenant.pk,
            changes={"status": [previous, status]},
        )
    tenant.refresh_from_db()
    return tenant


def update_quotas(
    *, actor: Actor, tenant: Tenant, tier: str | None, overrides: dict[str, Any]
) -> Tenant:
    new_tier = _validate_tier(tier) if tier else tenant.tier
    try:
        TIER_DEFAULTS[new_tier].with_overrides(overrides)
    except ValueError as exc:
        raise TenantError(str(exc)) from exc
    with transaction.atomic():
        Tenant.objects.filter(pk=tenant.pk).update(tier=new_tier, quota_overrides=overrides)
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="tenant.quotas_changed",
            target_type="tenant",
            target_id=tenant.pk,
            changes={"tier": new_tier, "quota_overrides": overrides},
        )
    tenant.refresh_from_db()
    return tenant


def add_member(*, actor: Actor, tenant: Tenant, user: User, role: str) -> Membership:
    if role not in Role.values:
        raise TenantError(f"unknown role {role!r}; use one of {', '.join(Role.values)}")
    with transaction.atomic(), tenant_scope(tenant.pk):
        membership, _ = Membership.objects.update_or_create(user=user, defaults={"role": role})
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="membership.granted",
            target_type="user",
            target_id=user.pk,
            changes={"role": role},
        )
    return membership


def issue_key(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str = "default",
    scopes: list[str] | None = None,
    created_by: User | None = None,
) -> IssuedKey:
    scopes = list(dict.fromkeys(scopes or ALL_SCOPES))
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise TenantError(f"unknown scope(s) {sorted(unknown)}; use {ALL_SCOPES}")
    generated = generate_key()
    with transaction.atomic(), tenant_scope(tenant.pk):
        key = APIKey.objects.create(
            name=name[:100] or "default",
            prefix=generated.prefix,
            secret_hash=generated.secret_hash,
            scopes=scopes,
            created_by=created_by,
        )
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="api_key.issued",
            target_type="api_key",
            target_id=key.prefix,
            changes={"name": key.name, "scopes": scopes},
        )
    return IssuedKey(key, generated.plaintext)


def revoke_key(*, actor: Actor, key: APIKey) -> APIKey:
    with transaction.atomic():
        updated = APIKey.unscoped.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=datetime.now(UTC)
        )
        if updated:
            append(
                tenant_id=key.tenant_id,
                actor=actor,
                action="api_key.revoked",
                target_type="api_key",
                target_id=key.prefix,
            )
    key.refresh_from_db()
    return key


def rotate_key(*, actor: Actor, key: APIKey, overlap: timedelta = timedelta(0)) -> IssuedKey:
    """Issue a replacement with the same name and scopes; the old key stops after ``overlap``."""
    if key.revoked_at is not None:
        raise TenantError("a revoked key cannot be rotated")
    tenant = Tenant.objects.get(pk=key.tenant_id)
    with transaction.atomic():
        issued = issue_key(actor=actor, tenant=tenant, name=key.name, scopes=key.scopes)
        now = datetime.now(UTC)
        changes: dict[str, Any] = {"replaced_by": issued.key.prefix}
        if overlap.total_seconds() > 0:
            APIKey.unscoped.filter(pk=key.pk).update(
                replaced_by=issued.key, expires_at=now + overlap
            )
            changes["expires_at"] = (now + overlap).isoformat()
        else:
            APIKey.unscoped.filter(pk=key.pk).update(replaced_by=issued.key, revoked_at=now)
        append(
            tenant_id=key.tenant_id,
            actor=actor,
            action="api_key.rotated",
            target_type="api_key",
            target_id=key.prefix,
            changes=changes,
        )
    return issued


class KeyRejected(Exception):
    def __init__(self, reason: str, error_type: str = "authentication_failed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


_LAST_USED_RESOLUTION = timedelta(seconds=60)


def authenticate_key(plaintext: str) -> APIKey:
    """The active key for ``plaintext`` with its tenant loaded, or KeyRejected."""
    parsed = parse_key(plaintext)
    if parsed is None:
        raise KeyRejected("malformed API key")
    prefix, secret = parsed
    # Authentication precedes any tenant scope: this lookup is by the key itself.
    key = unique_or_none(APIKey.unscoped.select_related("tenant").filter(prefix=prefix))
    if key is None or not secret_matches(secret, key.secret_hash):
        raise KeyRejected("invalid API key")
    now = datetime.now(UTC)
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise KeyRejected("API key revoked or expired")
    if key.tenant.status != TenantStatus.ACTIVE:
        raise KeyRejected(f"tenant is {key.tenant.status}", "tenant_inactive")
    if key.last_used_at is None or key.last_used_at < now - _LAST_USED_RESOLUTION:
        # Compare-and-set: at most one write a minute per key, whatever the traffic.
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - _LAST_USED_RESOLUTION)
        APIKey.unscoped.filter(stale, pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# Rows a tenant's day is split over: concurrent writers rarely pick the same one, so no
# row is one every run of a tenant waits for in turn (a day's usage is their sum).
USAGE_SHARDS = 16
_RECORD_USAGE_SQL = """
INSERT INTO tenants_usageday AS u (tenant_id, day, shard, runs, tokens, dollars)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, day, shard) DO UPDATE SET
    runs = u.runs + EXCLUDED.runs,
    tokens = u.tokens + EXCLUDED.tokens,
    dollars = u.dollars + EXCLUDED.dollars
"""


def record_usage(
    *, tenant_id: int, runs: int = 0, tokens: int = 0, dollars: Decimal = Decimal(0)
) -> None:
    """Add to one of today's ledger rows of the tenant: a single UPSERT.

    Callers make it their transaction's last write, so the row lock lasts only to COMMIT.
    """
    today = datetime.now(UTC).date()
    shard = secrets.randbelow(USAGE_SHARDS)
    with connection.cursor() as cursor:
        cursor.execute(_RECORD_USAGE_SQL, [tenant_id, today, shard, runs, tokens, dollars])


def usage_days(tenant_id: int, since: date) -> list[dict[str, Any]]:
    """The tenant's usage per day from ``since`` on, oldest first (shards summed)."""
    with tenant_scope(tenant_id):
        rows = (
            UsageDay.objects.filter(day__gte=since)
            .order_by("day")
            .values("day")
            .annotate(n_runs=Sum("runs"), n_tokens=Sum("tokens"), n_dollars=Sum("dollars"))
        )
        return [
            {
                "day": r["day"],
                "runs": r["n_runs"],
                "tokens": r["n_tokens"],
                "dollars": r["n_dollars"],
            }
            for r in rows
        ]


def month_start(day: date) -> date:
    return day.replace(day=1)


def usage_this_month(tenant_id: int) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    with tenant_scope(tenant_id):
        totals = UsageDay.objects.filter(day__gte=month_start(today)).aggregate(
            runs=Sum("runs"), tokens=Sum("tokens"), dollars=Sum("dollars")
        )
    return {
        "runs": totals["runs"] or 0,
        "tokens": totals["tokens"] or 0,
        "dollars": totals["dollars"] or Decimal(0),
    }
