"""The hash-chained audit log (SPEC 8)."""

from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One append-only event of a tenant's chain (``tenant`` NULL: the platform chain).

    ``hash`` = SHA-256(prev_hash + canonical JSON of the event's fields), so a
    changed, inserted, reordered or deleted event breaks every later link.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    sequence = models.PositiveBigIntegerField()
    occurred_at = models.DateTimeField()
    actor_type = models.CharField(max_length=20)  # user | api_key | system
    actor_id = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    changes = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=128, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "sequence"], name="audit_chain_sequence"),
            models.UniqueConstraint(
                fields=["sequence"],
                condition=models.Q(tenant__isnull=True),
                name="audit_platform_chain_sequence",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "occurred_at"])]
        ordering = ["tenant_id", "sequence"]

    def __str__(self) -> str:
        return f"{self.tenant_id}#{self.sequence} {self.action}"
