from __future__ import annotations

from django.contrib import admin

from agentflow.models import Agent, KnowledgeDocument, Run
from tenants.admin import AllTenantsAdmin


@admin.register(Agent)
class AgentAdmin(AllTenantsAdmin):
    list_display = ("name", "tenant", "blueprint", "version", "updated_at")
    search_fields = ("name",)


@admin.register(Run)
class RunAdmin(AllTenantsAdmin):
    list_display = ("id", "tenant", "agent", "status", "priority", "created_at", "finished_at")
    list_filter = ("status", "priority")
    readonly_fields = ("status", "result", "progress", "tokens", "cost_usd")


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(AllTenantsAdmin):
    list_display = ("title", "tenant", "agent", "content_type", "size_bytes", "created_at")
