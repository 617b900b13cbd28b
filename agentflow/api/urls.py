from __future__ import annotations

from django.urls import path

from agentflow.api import views

urlpatterns = [
    path("blueprints", views.BlueprintListView.as_view(), name="blueprint-list"),
    path("agents", views.AgentListView.as_view(), name="agent-list"),
    path("agents/<uuid:agent_id>", views.AgentDetailView.as_view(), name="agent-detail"),
    path(
        "agents/<uuid:agent_id>/preflight",
        views.AgentPreflightView.as_view(),
        name="agent-preflight",
    ),
    path("agents/<uuid:agent_id>/runs", views.AgentRunsView.as_view(), name="agent-runs"),
    path("agents/<uuid:agent_id>/messages", views.AgentRunsView.as_view(), name="agent-messages"),
    path(
        "agents/<uuid:agent_id>/knowledge", views.KnowledgeListView.as_view(), name="knowledge-list"
    ),
    path(
        "agents/<uuid:agent_id>/knowledge/<uuid:document_id>",
        views.KnowledgeDetailView.as_view(),
        name="knowledge-detail",
    ),
    path("agents/<uuid:agent_id>/tools", views.AgentToolsView.as_view(), name="agent-tools"),
    path("agents/<uuid:agent_id>/usage", views.AgentUsageView.as_view(), name="agent-usage"),
    path("usage/agents", views.AgentsUsageView.as_view(), name="agents-usage"),
    path(
        "agents/<uuid:agent_id>/tools/<str:tool_id>/invoke",
        views.AgentToolInvokeView.as_view(),
        name="agent-tool-invoke",
    ),
    path("runs", views.RunListView.as_view(), name="run-list"),
    path("runs/<uuid:run_id>", views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<uuid:run_id>/result", views.RunResultView.as_view(), name="run-result"),
    path("runs/<uuid:run_id>/steps", views.RunStepsView.as_view(), name="run-steps"),
    path("runs/<uuid:run_id>/tool-calls", views.RunToolCallsView.as_view(), name="run-tool-calls"),
    path(
        "sessions/<uuid:session_id>/conversation",
        views.SessionConversationView.as_view(),
        name="session-conversation",
    ),
    # Human takeover (issue 19): the session's mode, take over, hand back, the taker's replies.
    path("sessions/<uuid:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<uuid:session_id>/takeover",
        views.SessionTakeoverView.as_view(),
        name="session-takeover",
    ),
    path(
        "sessions/<uuid:session_id>/handback",
        views.SessionHandbackView.as_view(),
        name="session-handback",
    ),
    path(
        "sessions/<uuid:session_id>/messages",
        views.SessionMessagesView.as_view(),
        name="session-messages",
    ),
]
