"""Governance data: the hash-chained audit log, its checkpoints, tool permissions, restrictions.

The audit table is append-only in PostgreSQL itself (a trigger refuses UPDATE, DELETE and
TRUNCATE; see migration 0002), not only in Django.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from tenants.scoping import TenantOwnedModel, require_tenant_id


class TenantAuditManager(models.Manager["AuditEvent"]):
    """The current tenant's chain only; fails closed (raises) outside a tenant scope.

    ``AuditEvent`` cannot inherit :class:`TenantOwnedModel` (its tenant is nullable: the
    platform chain), so it carries this manager as its default, like every tenant-owned
    model; tenant-facing reads (API, exports, the dashboard) go through it. Chain
    maintenance (append, verify, checkpoints) works on any chain, the platform's
    included, and says so: ``unscoped``.
    """

    def get_queryset(self) -> models.QuerySet[AuditEvent]:
        return super().get_queryset().filter(tenant_id=require_tenant_id())


class AuditEvent(models.Model):
    """One append-only event of a tenant's chain (``tenant`` NULL: the platform chain).

    ``hash`` = SHA-256(prev_hash + canonical JSON of the event's fields), so a
    changed, inserted, reordered or deleted event breaks every later link.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # NULL, and an empty hash, until the sealer gives the event its place in the chain
    # (governance.audit.seal_chain): appends on the run path take no chain lock.
    sequence = models.PositiveBigIntegerField(null=True, blank=True)
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=20)  # user | api_key | system
    actor_id = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    changes = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=128, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    objects = TenantAuditManager()
    # Loudly named: every chain, the platform's included (append, verifier, checkpoints,
    # the platform admin's list); a tenant-facing read never uses it.
    unscoped = models.Manager()  # noqa: DJ012 - ruff takes a second manager for a field

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "sequence"], name="audit_chain_sequence"),
            models.UniqueConstraint(
                fields=["sequence"],
                condition=models.Q(tenant__isnull=True),
                name="audit_platform_chain_sequence",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"]),
            # The sealer's work list: small, since events stay unsealed a second or two.
            models.Index(
                fields=["tenant", "id"],
                condition=models.Q(sequence__isnull=True),
                name="audit_unsealed",
            ),
        ]
        ordering = ["tenant_id", "sequence"]

    def __str__(self) -> str:
        return f"{self.tenant_id}#{self.sequence} {self.action}"


class AuditCheckpoint(models.Model):
    """The last head of each chain exported outside the database (bookkeeping only).

    Verification never trusts this row (whoever can rewrite the chain can rewrite it): it
    reads the exported copies. It only lets the export skip chains that did not move.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sequence = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    exported_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One row per chain, the platform chain (NULL tenant) included (PostgreSQL 15+).
            models.UniqueConstraint(
                fields=["tenant"], nulls_distinct=False, name="audit_checkpoint_one_per_chain"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}@{self.sequence}"


class ToolPermissionLevel(models.TextChoices):
    """Ordered: each level includes the ones before it."""

    NONE = "none", "None"
    READ = "read", "Read"
    EXECUTE = "execute", "Execute"
    ADMIN = "admin", "Admin"


class AgentToolPermission(TenantOwnedModel):
    """What an agent's tool allows, per role (``role`` blank: every role).

    ``tool`` ``*`` is the agent's default for tools without a row of their own. No row at
    all means ``none``: tools are denied by default. The level is then capped by the
    caller's role (see ``governance.services.effective_tool_permission``).
    """

    agent = models.ForeignKey(
        "agentflow.Agent", on_delete=models.CASCADE, related_name="tool_permissions"
    )
    tool = models.CharField(max_length=100)
    role = models.CharField(max_length=20, blank=True)
    level = models.CharField(max_length=10, choices=ToolPermissionLevel.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "tool", "role"], name="agent_tool_permission_unique"
            )
        ]
        ordering = ["tool", "role"]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.tool}:{self.role or '*'}={self.level}"


class AgentRestriction(TenantOwnedModel):
    """This member sees only the agents they hold ``agentflow.view_agent`` on (guardian).

    Without a row a member's role applies to every agent of the tenant; with one, to the
    agents granted by django-guardian object permissions, and nothing else (an empty
    grant list means no agent at all).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_restrictions"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="agent_restriction_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}"


class Invitation(TenantOwnedModel):
    """An offer to join the tenant with a role, which only its addressee can accept.

    A tenant cannot make anyone a member by itself: it names a person (a username or an
    e-mail address), and the person, signed in as themselves, accepts with the token sent
    to them. Only a SHA-256 of the token is stored (256 random bits: a fast hash suffices,
    as for API keys).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(blank=True)
    username = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=20)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.CharField(max_length=120)  # the actor, "<type>:<id>"
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(email="") & ~models.Q(username=""))
                | (~models.Q(email="") & models.Q(username="")),
                name="invitation_names_one_person",
            )
        ]
        indexes = [models.Index(fields=["tenant", "created_at"])]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email or self.username}@{self.tenant_id}:{self.role}"
