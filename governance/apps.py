from __future__ import annotations

from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance import checks, signals  # noqa: F401 - checks registers itself
        from governance.services import visible_agents
        from tenants.views_base import register_agent_visibility

        signals.connect()
        register_agent_visibility(visible_agents)  # the API base view's agent restrictions
