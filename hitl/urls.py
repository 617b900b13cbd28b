from __future__ import annotations

from django.urls import path

from hitl import api

urlpatterns = [
    path("queue", api.QueueView.as_view(), name="hitl-queue"),
    path("queue/<uuid:request_id>", api.RequestDetailView.as_view(), name="hitl-request"),
    path("queue/<uuid:request_id>/claim", api.ClaimView.as_view(), name="hitl-claim"),
    path("queue/<uuid:request_id>/unclaim", api.UnclaimView.as_view(), name="hitl-unclaim"),
    path("queue/<uuid:request_id>/respond", api.RespondView.as_view(), name="hitl-respond"),
    path("queue/<uuid:request_id>/history", api.HistoryView.as_view(), name="hitl-history"),
    path("escalate/<uuid:run_id>", api.EscalateView.as_view(), name="hitl-escalate"),
    path("reviewers", api.ReviewersView.as_view(), name="hitl-reviewers"),
    path("stats", api.StatsView.as_view(), name="hitl-stats"),
]
