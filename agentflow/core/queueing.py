"""Sending Celery tasks when the broker may be down.

Work the platform accepted is already in PostgreSQL when its task is sent (after the
commit), and every kind of it has a sweep that sends it again: runs have
``maintenance.recover_runs``, the activity stream its PostgreSQL replay. So a broker
outage at send time is logged and counted, never raised into a request that has already
committed (which would answer 500 for work that was in fact accepted).

A task is sent as an object or by its registered name: a service sends its own app's
task by name, so the task module (which calls the service) is the only one importing the
other, and no import cycle runs between them.
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery import Task, current_app
from kombu.exceptions import OperationalError as BrokerUnavailable

from agentflow.core.metrics import TASKS_NOT_SENT

log = structlog.get_logger(__name__)

# What a broker that is down or unreachable raises on publish.
BROKER_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, redis.RedisError, OSError)


def by_name(name: str) -> Task:
    """The task registered as ``name`` (each app's ``AppConfig.ready`` imports its task
    module, so every process has them); a name nobody registered is a KeyError, not a
    message no worker knows."""
    return current_app.tasks[name]


def send(task: Task | str, *args: Any, **kwargs: Any) -> bool:
    """``task.delay(...)``; False (logged, counted) when the broker cannot take it.

    ``task`` may be a task's name (:func:`by_name`).
    """
    if isinstance(task, str):
        task = by_name(task)
    try:
        task.delay(*args, **kwargs)
    except BROKER_ERRORS as exc:
        TASKS_NOT_SENT.labels(task=task.name).inc()
        log.error("task.not_sent", task=task.name, error=f"{type(exc).__name__}: {exc}")
        return False
    return True
