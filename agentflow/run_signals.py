"""Run-finished notifications over Redis pub/sub, so ``Prefer: wait=N`` needs no polling."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

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


class InFlightRuns:
    """The runs this process is executing, interrupted when another process settles one.

    A run cancelled through the API (or finished by another delivery) is announced on its
    settled channel; a listener thread of the process cancels the run's coroutine, so a
    cancelled run stops calling its LLM at once instead of finishing its work for nothing.
    Without Redis nothing is interrupted, and the run's own completion still loses the
    compare-and-set, as before.
    """

    def __init__(self) -> None:
        self._runs: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._listener_pid = 0

    @contextlib.contextmanager
    def track(self, run_id: str, future: concurrent.futures.Future[Any]) -> Iterator[None]:
        self._ensure_listener()
        with self._lock:
            self._runs[run_id] = future
        try:
            yield
        finally:
            with self._lock:
                self._runs.pop(run_id, None)

    def interrupt(self, run_id: str) -> bool:
        with self._lock:
            future = self._runs.get(run_id)
        return future is not None and future.cancel()

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener_pid == os.getpid():
                return
            self._listener_pid = os.getpid()  # a forked child starts its own
        threading.Thread(target=self._listen, name="run-settled-listener", daemon=True).start()

    def _listen(self) -> None:
        prefix = channel("")
        while True:
            try:
                # Its own client: a quiet channel is normal, so no read timeout; the health
                # check notices a dead connection instead.
                client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{prefix}*")
                for message in pubsub.listen():
                    name = message.get("channel") or b""
                    run_id = name.decode() if isinstance(name, bytes) else str(name)
                    if self.interrupt(run_id.removeprefix(prefix)):
                        log.info("run.interrupted", run_id=run_id.removeprefix(prefix))
            except redis.RedisError as exc:
                log.warning("run.listener_reconnecting", error=f"{type(exc).__name__}: {exc}")
                time.sleep(1.0)


in_flight_runs = InFlightRuns()
