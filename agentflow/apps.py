from __future__ import annotations

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The agents app: agents, sessions, threads, messages, runs (SPEC 3)."""

    name = "agentflow"
    label = "agentflow"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI description of API-key authentication.
        from agentflow import (
            checks,  # noqa: F401 - registers the embedder's start-up check
            erasure,
            tasks,  # noqa: F401 - registers the tasks services send by name
        )
        from agentflow.core.api import schema  # noqa: F401

        erasure.register()  # the app's GDPR erasers (governance.erasure runs them)
