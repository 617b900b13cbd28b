"""The dashboard's pages (SPEC 11; URLs and selectors: docs/operations.md, Dashboard)."""

from __future__ import annotations

from django.urls import path

from frontend import (
    views,
    views_activity,
    views_learning,
    views_manage,
    views_members,
    views_policies,
    views_rules,
    views_sessions,
    views_webhooks,
)

urlpatterns = [
    path("favicon.ico", views.favicon, name="favicon"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("tenant/select/", views.TenantSelectView.as_view(), name="tenant-select"),
    path("", views.OverviewView.as_view(), name="home"),
    path("runs/", views.RunListView.as_view(), name="dashboard-runs"),
    path("runs/<uuid:run_id>/", views.RunDetailView.as_view(), name="dashboard-run"),
    path("hitl/", views.QueueView.as_view(), name="dashboard-hitl"),
    path("hitl/<uuid:request_id>/", views.RequestDetailView.as_view(), name="dashboard-request"),
    path("agents/", views_manage.AgentListView.as_view(), name="dashboard-agents"),
    path("agents/new/<str:blueprint>/", views_manage.AgentNewView.as_view(), name="agent-new"),
    path("agents/<uuid:agent_id>/", views_manage.AgentDetailView.as_view(), name="dashboard-agent"),
    path("tenants/", views_manage.TenantListView.as_view(), name="dashboard-tenants"),
    path(
        "tenants/<int:tenant_id>/",
        views_manage.TenantDetailView.as_view(),
        name="dashboard-tenant",
    ),
    path("audit/", views_manage.AuditView.as_view(), name="dashboard-audit"),
    path("learning/", views_learning.LearningView.as_view(), name="dashboard-learning"),
    path("webhooks/", views_webhooks.WebhooksView.as_view(), name="dashboard-webhooks"),
    path("members/", views_members.MembersView.as_view(), name="dashboard-members"),
    path("activity/", views_activity.ActivityView.as_view(), name="dashboard-activity"),
    path(
        "activity/<uuid:event_id>/",
        views_activity.ActivityDetailView.as_view(),
        name="dashboard-activity-event",
    ),
    path("graph/", views_activity.GraphView.as_view(), name="dashboard-graph"),
    path("rules/", views_rules.RulesView.as_view(), name="dashboard-rules"),
    path("rules/<uuid:rule_id>/", views_rules.RuleEditView.as_view(), name="dashboard-rule"),
    path("policies/", views_policies.PoliciesView.as_view(), name="dashboard-policies"),
    path(
        "policies/<int:policy_id>/",
        views_policies.PolicyEditView.as_view(),
        name="dashboard-policy",
    ),
    # Human takeover (issue 19): a conversation, live, taken over and handed back.
    path(
        "sessions/<uuid:session_id>/",
        views_sessions.SessionDetailView.as_view(),
        name="dashboard-session",
    ),
]
