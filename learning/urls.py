"""Routes of the learning app under ``/api/v1/``: webhooks, the activity stream, the graph."""

from __future__ import annotations

from django.urls import path

from learning import api, loop_api
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
    path("learning/golden-paths", loop_api.GoldenPathListView.as_view(), name="golden-paths"),
    path(
        "learning/golden-paths/search",
        loop_api.GoldenPathSearchView.as_view(),
        name="golden-paths-search",
    ),
    path(
        "learning/golden-paths/<uuid:golden_path_id>",
        loop_api.GoldenPathDetailView.as_view(),
        name="golden-path",
    ),
    path(
        "learning/golden-paths/<uuid:golden_path_id>/deactivate",
        loop_api.GoldenPathDeactivateView.as_view(),
        name="golden-path-deactivate",
    ),
    path(
        "learning/golden-paths/<uuid:golden_path_id>/activate",
        loop_api.GoldenPathActivateView.as_view(),
        name="golden-path-activate",
    ),
    path("learning/feedback", loop_api.FeedbackView.as_view(), name="feedback"),
    path("learning/playbooks", loop_api.PlaybookListView.as_view(), name="playbooks"),
    path(
        "learning/playbooks/suggest",
        loop_api.PlaybookSuggestView.as_view(),
        name="playbooks-suggest",
    ),
    path(
        "learning/playbooks/extract",
        loop_api.PlaybookExtractView.as_view(),
        name="playbooks-extract",
    ),
    path(
        "learning/playbooks/<uuid:playbook_id>",
        loop_api.PlaybookDetailView.as_view(),
        name="playbook",
    ),
    path(
        "learning/playbooks/<uuid:playbook_id>/retire",
        loop_api.PlaybookRetireView.as_view(),
        name="playbook-retire",
    ),
    path(
        "learning/playbooks/<uuid:playbook_id>/apply",
        loop_api.PlaybookApplyView.as_view(),
        name="playbook-apply",
    ),
    path(
        "graph/similar-resolutions",
        api.SimilarResolutionsView.as_view(),
        name="graph-similar-resolutions",
    ),
]
