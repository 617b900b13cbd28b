"""Admin for platform admins: read-only views of integrations data (writes are audited
services: endpoints and rules change through the API)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from learning.models import ActivityEvent, EventRule, GraphNode, WebhookEndpoint
from tenants.admin import AllTenantsAdmin


class ReadOnlyAdmin(AllTenantsAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "provider", "name", "created_at", "rotated_at")
    list_filter = ("provider",)
    # Encrypted secrets stay out of the page entirely.
    exclude = ("secret_encrypted", "previous_secret_encrypted")


@admin.register(ActivityEvent)
class ActivityEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "source", "kind", "occurred_at", "published_at", "processed_at")
    list_filter = ("source", "kind")
    date_hierarchy = "occurred_at"


@admin.register(EventRule)
class EventRuleAdmin(ReadOnlyAdmin):
    list_display = ("name", "tenant", "event_kind", "agent", "priority", "enabled")


@admin.register(GraphNode)
class GraphNodeAdmin(ReadOnlyAdmin):
    list_display = ("kind", "key", "label", "category", "tenant", "last_seen")
    list_filter = ("kind",)
    search_fields = ("key", "label")
