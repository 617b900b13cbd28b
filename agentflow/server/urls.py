"""URL configuration of the project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from agentflow.server import health

handler404 = "agentflow.server.errors.json_not_found"
handler500 = "agentflow.server.errors.json_server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/v1/", include("agentflow.api.urls")),
    path("api/v1/", include("tenants.urls")),
    path("api/v1/", include("learning.urls")),
    path("api/v1/governance/", include("governance.urls")),
    path("api/v1/hitl/", include("hitl.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api_docs/redoc.html"),
        name="api-redoc",
    ),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]
