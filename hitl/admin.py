"""Admin of review settings, policies and availability for platform admins; requests are
read-only here (decisions go through the API, so they resume runs and are audited)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from hitl.models import EscalationPolicy, HITLRequest, ReviewerAvailability, ReviewSettings
from tenants.admin import AllTenantsAdmin
from tenants.scoping import TenantOwnedModel


class HITLAdmin(AllTenantsAdmin):
    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if issubclass(related, TenantOwnedModel):
            # Platform admins pick among every tenant's rows; the model's clean() checks
            # that the chosen row belongs to the same tenant.
            kwargs.setdefault("queryset", related.unscoped.all())
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(HITLAdmin):
    list_display = ("name", "tenant", "position", "enabled", "on_breach", "on_expiry")
    list_filter = ("enabled", "on_breach", "on_expiry")


@admin.register(ReviewSettings)
class ReviewSettingsAdmin(HITLAdmin):
    list_display = ("tenant", "agent", "on_reject")
    raw_id_fields = ("agent",)


@admin.register(ReviewerAvailability)
class ReviewerAvailabilityAdmin(HITLAdmin):
    list_display = ("user", "tenant", "available", "capacity", "last_assigned_at")
    list_filter = ("available",)
    raw_id_fields = ("user",)


@admin.register(HITLRequest)
class HITLRequestAdmin(HITLAdmin):
    list_display = ("id", "tenant", "kind", "priority", "status", "assignee", "sla_deadline")
    list_filter = ("status", "priority", "kind")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
