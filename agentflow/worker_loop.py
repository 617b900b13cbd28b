"""One long-lived event loop per worker thread for the async kernel.

``asyncio.run`` per task would close the loop after each run, and pipelines that hold
network clients (the openai SDK's connection pool) are bound to the loop they were built
on; a persistent loop lets them be cached and reused across tasks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_local = threading.local()


def run(coro: Coroutine[Any, Any, T]) -> T:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop.run_until_complete(coro)
