from __future__ import annotations

from django.apps import AppConfig


class LearningConfig(AppConfig):
    name = "learning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from learning import (
            erasure,
            services,
            tasks,  # noqa: F401 - registers the tasks the stream sends by name
        )

        # Runs settling outside a review -> activity stream. A review's events and golden path
        # are called explicitly by agentflow.orchestration.decide_review.
        services.connect()
        erasure.register()  # the app's GDPR eraser
