from __future__ import annotations

from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "learning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from learning import (
            erasure,
            tasks,  # noqa: F401 - registers the tasks the stream sends by name
        )

        # No signal receivers: the run service's transition and agentflow.orchestration
        # record into the activity stream by direct calls.
        erasure.register()  # the app's GDPR eraser
