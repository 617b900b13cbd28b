"""One long-lived event loop per process, in its own thread, for the async kernel.

Every run of a worker process is a task on this one loop: a run waiting two seconds for
the LLM costs a suspended coroutine, not a process or a thread, so a worker holds hundreds
of runs in flight (issue 15). Callers in other threads (the Celery threads pool of the run
worker, sync views) submit a coroutine and block on its result (``realtime``'s outbox
submits its drain and does not wait); their context variables (tenant scope, log
bindings) ride along, because ``run_coroutine_threadsafe`` creates the task in a copy of
the caller's context.

Network clients (the openai SDK's pool, the channel layer's Redis connections) are bound to
the loop they were built on; one loop per process lets them be cached and shared by every
run. The loop is started lazily and again in a forked child (a thread does not survive a
fork), and closed when the worker process shuts down (and by the test suite).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_shutdown, worker_shutdown

T = TypeVar("T")
_lock = threading.Lock()
# Awaited on the loop before a close cancels what still runs (the live events' outbox).
_before_close: list[Callable[[], Coroutine[Any, Any, None]]] = []
_HOOKS_SECONDS = 5.0


def before_close(hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Have ``hook()`` awaited on the loop when it closes, before its tasks are cancelled."""
    _before_close.append(hook)


class _ProcessLoop:
    """The loop, the thread that serves it, and the process that started them."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="agentflow-event-loop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def usable(self) -> bool:
        return self.pid == os.getpid() and not self.loop.is_closed() and self.thread.is_alive()

    def close(self, timeout: float) -> None:
        """Cancel what is still running, stop the loop and close it."""
        if self.pid != os.getpid() or self.loop.is_closed():
            return
        if self.thread.is_alive():
            # The hooks get a few seconds at most: a channel layer that is down must not hold
            # a stopping worker for the whole timeout.
            steps = ((_run_close_hooks, min(timeout, _HOOKS_SECONDS)), (_cancel_others, timeout))
            for step, seconds in steps:
                with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                    asyncio.run_coroutine_threadsafe(step(), self.loop).result(seconds)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()


_current: _ProcessLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    """This process's loop, started on first use (and again after a fork)."""
    global _current
    with _lock:
        if _current is None or not _current.usable:
            _current = _ProcessLoop()
        return _current.loop


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the process loop, in the caller's context; don't wait."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the process loop and wait for it (from any thread but the loop's)."""
    target = loop()
    if _running_loop() is target:
        coro.close()
        raise RuntimeError("worker_loop.run() called from the process loop itself: await it")
    future = asyncio.run_coroutine_threadsafe(coro, target)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # the caller is gone (interrupted): don't leave the work running
        raise


def in_flight() -> int:
    """Tasks alive on this process's loop (runs and what they spawned), for metrics."""
    current = _current
    if current is None or not current.usable:
        return 0
    return len(asyncio.all_tasks(current.loop))


def close_all(timeout: float = 30.0) -> None:
    """Stop and close this process's loop; the next ``run`` starts a fresh one."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.close(timeout)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _run_close_hooks() -> None:
    for hook in list(_before_close):
        await hook()


async def _cancel_others() -> None:
    me = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not me]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_on_shutdown(**_: Any) -> None:
    close_all()
