"""Celery's own retry options, with limits read from ``AGENTFLOW`` settings at run time.

Celery fixes ``retry_backoff`` and ``max_retries`` when the task is created (and rounds the
backoff factor up to whole seconds); notification and reply retries are operator settings
that may change under a running worker (tests shorten them to milliseconds). So these
tasks keep Celery's ``autoretry_for`` and ``Task.retry`` and only answer ``max_retries``
and ``default_retry_delay`` from the settings named on the task.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task

from agentflow.core.conf import setting_float, setting_int

log = structlog.get_logger(__name__)


class RetryFromSettings(Task):
    """Exponential backoff (``base * 2**retries``) and a retry limit taken from settings.

    Subclasses name the settings; ``gave_up_event`` is logged (error) when the last retry
    failed, ``retry_event`` (warning) before each retry.
    """

    abstract = True
    max_retries_setting: str = ""
    retry_seconds_setting: str = ""
    retry_event: str = ""
    gave_up_event: str = ""

    @property
    def max_retries(self) -> int:
        return setting_int(self.max_retries_setting)

    @property
    def default_retry_delay(self) -> float:
        base = setting_float(self.retry_seconds_setting)
        return float(base * (2 ** int(self.request.retries)))

    def on_retry(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if self.retry_event:
            log.warning(self.retry_event, **self.log_fields(args, kwargs), error=str(exc))

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if self.gave_up_event:
            log.error(
                self.gave_up_event,
                **self.log_fields(args, kwargs),
                attempts=int(self.request.retries) + 1,
                error=str(exc),
            )

    def log_fields(self, args: Any, kwargs: Any) -> dict[str, Any]:
        """What identifies the task's work in its log lines (override per task family)."""
        return {}
