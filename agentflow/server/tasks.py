"""Operational tasks of the project itself: liveness heartbeats of workers and beat."""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import shared_task
from django.conf import settings

from agentflow.core.context import current_correlation_id

HEARTBEAT_KEY = "agentflow:heartbeat:{source}"
HEARTBEAT_TTL_SECONDS = 300


@shared_task(name="maintenance.heartbeat", ignore_result=True)
def heartbeat(source: str = "beat") -> float:
    """Beat schedules this; a worker running it proves both are alive (see ``ping_workers``)."""
    now = time.time()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.set(HEARTBEAT_KEY.format(source=source), now, ex=HEARTBEAT_TTL_SECONDS)
    finally:
        client.close()
    return now


@shared_task(name="maintenance.echo_context")
def echo_context(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Round-trips through a worker and reports the context it ran with (``ping_workers``)."""
    return {"correlation_id": current_correlation_id(), "payload": payload or {}}


def last_heartbeat(source: str) -> float | None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        value = client.get(HEARTBEAT_KEY.format(source=source))
    finally:
        client.close()
    return float(value) if value is not None else None
