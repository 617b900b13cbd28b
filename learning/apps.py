from __future__ import annotations

from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "learning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from learning import loop, services

        services.connect()  # internal events (runs settling, HITL decisions) -> activity stream
        loop.connect()  # HITL decisions -> golden paths; completed runs -> golden path usage
