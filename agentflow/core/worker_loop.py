"""One long-lived event loop per worker thread for the async kernel.

``asyncio.run`` per task would close the loop after each run, and pipelines that hold
network clients (the openai SDK's connection pool) are bound to the loop they were built
on; a persistent loop lets them be cached and reused across tasks. Loops are closed when
the worker process shuts down (and by the test suite), never left to the garbage collector.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_shutdown, worker_shutdown

T = TypeVar("T")
_local = threading.local()
_loops: list[asyncio.AbstractEventLoop] = []
_lock = threading.Lock()


def run(coro: Coroutine[Any, Any, T]) -> T:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
        with _lock:
            _loops.append(loop)
    return loop.run_until_complete(coro)


def close_all() -> None:
    """Close every idle loop this module made (their threads may be gone already)."""
    with _lock:
        loops, _loops[:] = list(_loops), []
    for loop in loops:
        if loop.is_closed():
            continue
        if loop.is_running():  # still serving a task: keep it for the next close_all
            with _lock:
                _loops.append(loop)
            continue
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_on_shutdown(**_: Any) -> None:
    close_all()
