from __future__ import annotations

from django.urls import path

from tenants import api
from tenants.models import TenantStatus

urlpatterns = [
    path("tenants", api.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<int:tenant_id>", api.TenantDetailView.as_view(), name="tenant-detail"),
    path(
        "tenants/<int:tenant_id>/activate",
        api.TenantStatusView.as_view(new_status=TenantStatus.ACTIVE),
        name="tenant-activate",
    ),
    path(
        "tenants/<int:tenant_id>/suspend",
        api.TenantStatusView.as_view(new_status=TenantStatus.SUSPENDED),
        name="tenant-suspend",
    ),
    path("tenants/<int:tenant_id>/keys", api.TenantKeysView.as_view(), name="tenant-keys"),
    path(
        "tenants/<int:tenant_id>/keys/<int:key_id>",
        api.TenantKeyDetailView.as_view(),
        name="tenant-key-detail",
    ),
    path(
        "tenants/<int:tenant_id>/keys/<int:key_id>/rotate",
        api.TenantKeyRotateView.as_view(),
        name="tenant-key-rotate",
    ),
    path("tenants/<int:tenant_id>/usage", api.TenantUsageView.as_view(), name="tenant-usage"),
    path("usage", api.OwnUsageView.as_view(), name="own-usage"),
]
