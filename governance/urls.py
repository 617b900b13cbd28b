from __future__ import annotations

from django.urls import path

from governance import api

urlpatterns = [
    path("audit", api.AuditListView.as_view(), name="governance-audit"),
    path("audit/verify", api.AuditVerifyView.as_view(), name="governance-audit-verify"),
    path("export", api.ExportView.as_view(), name="governance-export"),
    path("erasures", api.ErasureView.as_view(), name="governance-erasures"),
    path("roles", api.RolesView.as_view(), name="governance-roles"),
    path("invitations", api.InvitationsView.as_view(), name="governance-invitations"),
    path(
        "invitations/accept",
        api.InvitationAcceptView.as_view(),
        name="governance-invitation-accept",
    ),
    path(
        "invitations/<uuid:invitation_id>",
        api.InvitationDetailView.as_view(),
        name="governance-invitation",
    ),
    path(
        "agents/<uuid:agent_id>/tool-permissions",
        api.ToolPermissionsView.as_view(),
        name="governance-tool-permissions",
    ),
]
