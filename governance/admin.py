"""Admin for platform admins: the audit log (read-only), roles (audited), grants (read-only).

Role changes made here go through ``governance.services`` like the API's, so they are
audited; tool grants and agent restrictions are shown, and changed over the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse

from governance import services
from governance.audit import Actor
from governance.models import AgentRestriction, AgentToolPermission, AuditEvent
from tenants.admin import AllTenantsAdmin
from tenants.admin import MembershipAdmin as TenantsMembershipAdmin
from tenants.context import tenant_scope
from tenants.models import Membership


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin, AllTenantsAdmin):
    """Read-only: the audit log is append-only (PostgreSQL refuses changes anyway). The
    platform admin sees every chain, the platform's included."""

    list_display = ("tenant", "sequence", "occurred_at", "actor_type", "actor_id", "action")
    list_filter = ("action", "actor_type")
    search_fields = ("action", "target_id", "actor_id", "correlation_id")


@admin.register(AgentToolPermission)
class AgentToolPermissionAdmin(ReadOnlyAdmin, AllTenantsAdmin):
    list_display = ("agent", "tenant", "tool", "role", "level", "updated_at")
    list_filter = ("level", "role")


@admin.register(AgentRestriction)
class AgentRestrictionAdmin(ReadOnlyAdmin, AllTenantsAdmin):
    list_display = ("user", "tenant", "created_at")


def _actor(request: HttpRequest) -> Actor:
    return Actor("user", str(request.user.pk))


class AuditedMembershipAdmin(TenantsMembershipAdmin):
    """Role assignment for platform admins, audited and guarded like the API's."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A membership is a (tenant, user) pair: change its role, or remove it and add another.
        return ("tenant", "user", "created_at") if obj is not None else ("created_at",)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The form validates the (tenant, user) constraint through the scoped manager: run
        # it in the membership's tenant (the edited row's, or the one picked in the form).
        tenant_id = self._tenant_of(request, object_id)
        if tenant_id is None:
            return super().changeform_view(request, object_id, form_url, extra_context)
        with tenant_scope(tenant_id):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def _tenant_of(self, request: HttpRequest, object_id: str | None) -> int | None:
        if object_id is not None and object_id.isdigit():
            return (
                Membership.unscoped.filter(pk=int(object_id))
                .values_list("tenant_id", flat=True)
                .first()
            )
        picked = request.POST.get("tenant", "")
        return int(picked) if picked.isdigit() else None

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        try:
            services.assign_role(
                actor=_actor(request), tenant=obj.tenant, user=obj.user, role=obj.role
            )
        except services.GovernanceError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        try:
            services.revoke_role(actor=_actor(request), tenant=obj.tenant, user=obj.user)
        except services.GovernanceError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for membership in queryset:
            self.delete_model(request, membership)


admin.site.unregister(Membership)
admin.site.register(Membership, AuditedMembershipAdmin)
