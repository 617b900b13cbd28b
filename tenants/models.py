"""Tenants, memberships, API keys and the usage ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from tenants.quotas import TIER_DEFAULTS, Quotas, Tier
from tenants.scoping import TenantOwnedModel


class TenantStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Role(models.TextChoices):
    """A user's role in one tenant (platform admins are Django staff users: tenants.roles)."""

    OWNER = "owner", "Tenant owner"
    OPERATOR = "operator", "Operator"
    REVIEWER = "reviewer", "Reviewer"
    VIEWER = "viewer", "Viewer"


class Tenant(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    tier = models.CharField(max_length=20, choices=Tier.CHOICES, default=Tier.FREE)
    status = models.CharField(
        max_length=20, choices=TenantStatus.choices, default=TenantStatus.ACTIVE, db_index=True
    )
    # Per-tenant quota overrides, validated against Quotas' fields on write.
    quota_overrides = models.JSONField(default=dict, blank=True)
    # Tenant preferences, e.g. {"redact_pii_before_persistence": true}.
    preferences = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.slug

    @property
    def quotas(self) -> Quotas:
        return TIER_DEFAULTS[self.tier].with_overrides(self.quota_overrides)

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class Membership(TenantOwnedModel):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}:{self.role}"


class APIKeyScope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    ADMIN = "admin", "Tenant administration"


class APIKey(TenantOwnedModel):
    """A tenant API key. Only a SHA-256 of the secret is stored; the key is shown once.

    The secret has 256 bits of entropy, so a fast hash is the right tool here (a
    slow KDF protects low-entropy passwords, and would cost every request).
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Set when a rotation replaced this key; it keeps working until expires_at.
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class UsageDay(TenantOwnedModel):
    """What a tenant consumed on one UTC day: the ledger quotas and invoices read.

    A day is split over up to ``USAGE_SHARDS`` rows (``shard``), each writer adding to one
    chosen at random, so a tenant's concurrent runs do not queue for one row: a day's usage
    is the sum of its rows (``tenants.services.usage_days``).
    """

    day = models.DateField()
    shard = models.PositiveSmallIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    dollars = models.DecimalField(max_digits=14, decimal_places=6, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "shard"], name="usage_day_shard")
        ]
        ordering = ["day", "shard"]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}#{self.shard}"


class IdempotencyRecord(models.Model):
    """The first response to a POST with an ``Idempotency-Key``, replayed to its retries.

    ``owner`` is the key's namespace: ``tenant:<id>`` for tenant requests, ``platform`` for
    platform administration, which has no tenant. Every read filters by it.
    """

    owner = models.CharField(max_length=40)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    body_hash = models.CharField(max_length=64)
    completed = models.BooleanField(default=False)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)  # the data, for lookups (erasure)
    # The bytes sent the first time, replayed as they are (JSONB reorders keys); NULL in
    # rows stored before they were kept, which replay ``response_body`` re-rendered.
    response_content = models.BinaryField(null=True)
    response_headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "key", "method", "path"], name="idempotency_unique_request"
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
