"""Routes of the learning app under ``/api/v1/``: webhooks, the activity stream, the graph."""

from __future__ import annotations

from django.urls import path

from learning import api
from learning.models import WebhookProvider
from learning.webhooks import views as webhooks

urlpatterns = [
    path("webhooks/endpoints", webhooks.EndpointListView.as_view(), name="webhook-endpoints"),
    path(
        "webhooks/endpoints/<uuid:endpoint_id>",
        webhooks.EndpointDetailView.as_view(),
        name="webhook-endpoint",
    ),
    path(
        "webhooks/endpoints/<uuid:endpoint_id>/rotate",
        webhooks.EndpointRotateView.as_view(),
        name="webhook-endpoint-rotate",
    ),
    # Deliveries: one route per provider, authenticated by the provider's signature.
    *(
        path(
            f"webhooks/{provider}/<uuid:endpoint_id>",
            webhooks.DeliveryView.as_view(provider=provider),
            name=f"webhook-delivery-{provider}",
        )
        for provider in WebhookProvider.values
    ),
    path("activity", api.ActivityListView.as_view(), name="activity-list"),
    path("activity/rules", api.RuleListView.as_view(), name="activity-rules"),
    path("activity/rules/<uuid:rule_id>", api.RuleDetailView.as_view(), name="activity-rule"),
    path("activity/<uuid:event_id>", api.ActivityDetailView.as_view(), name="activity-detail"),
    path("graph/nodes", api.NodeListView.as_view(), name="graph-nodes"),
    path("graph/nodes/<uuid:node_id>", api.NodeDetailView.as_view(), name="graph-node"),
    path("graph/nodes/<uuid:node_id>/journey", api.JourneyView.as_view(), name="graph-journey"),
    path(
        "graph/similar-resolutions",
        api.SimilarResolutionsView.as_view(),
        name="graph-similar-resolutions",
    ),
]
