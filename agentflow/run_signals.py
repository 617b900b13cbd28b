"""Run-finished notifications over Redis pub/sub, so ``Prefer: wait=N`` needs no polling."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from django.conf import settings

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    return _client


def channel(run_id: Any) -> str:
    return f"agentflow:run-settled:{run_id}"


def publish_settled(run_id: Any) -> None:
    _redis().publish(channel(run_id), b"1")


class SettledWaiter:
    """Subscribe *before* enqueueing, then wait: a fast run cannot be missed."""

    def __init__(self, run_id: Any) -> None:
        self._pubsub = _redis().pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(run_id))

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                message = self._pubsub.get_message(timeout=min(remaining, 1.0))
                if message is not None:
                    return True
            return False
        finally:
            self.close()

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._pubsub.close()
