"""Django admin for platform admins: every tenant, read through loudly named bypasses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants.models import APIKey, Membership, Tenant, UsageDay


class AllTenantsAdmin(admin.ModelAdmin):
    """Admin of a tenant-owned model: platform admins see every tenant's rows."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.model.unscoped.all()


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "tier", "status", "created_at")
    list_filter = ("tier", "status")
    search_fields = ("slug", "name")
    # Status and keys change through the API/services so they are audited.
    readonly_fields = ("status", "created_at", "updated_at")


@admin.register(Membership)
class MembershipAdmin(AllTenantsAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)


@admin.register(APIKey)
class APIKeyAdmin(AllTenantsAdmin):
    list_display = ("prefix", "name", "tenant", "scopes", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "secret_hash", "created_at", "last_used_at", "replaced_by")
    exclude = ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are issued by tenants.services.issue_key (shown once, audited)


@admin.register(UsageDay)
class UsageDayAdmin(AllTenantsAdmin):
    list_display = ("tenant", "day", "runs", "tokens", "dollars")
    list_filter = ("day",)
