from __future__ import annotations

from django.apps import AppConfig


class HitlConfig(AppConfig):
    name = "hitl"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from hitl import (
            checks,  # noqa: F401 - registers the settings checks
            erasure,
            non_answers,
        )

        erasure.register()  # the review copies' GDPR eraser
        non_answers.register()  # hand-off messages count as non-answers, whoever asks
