"""Coarse stage deadlines: `asyncio.timeout` semantics at a fraction of its per-use cost.

`asyncio.timeout` schedules and cancels a timer-heap entry every time it is entered,
several microseconds per stage per message. Stage limits are tens of seconds, so a
deadline checked every `resolution` seconds by one shared timer is precise enough and
costs two dict operations per use. A scope that outlives its deadline has its task
cancelled, and the cancellation surfaces as `TimeoutError` at the scope's exit, exactly
like `asyncio.timeout` (cancellations from anyone else pass through untouched).
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Scope:
    __slots__ = ("_deadlines", "_seconds", "deadline", "expired", "task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self.deadline = 0.0
        self.expired = False
        self.task: asyncio.Task[object] | None = None

    def __enter__(self) -> _Scope:
        loop = asyncio.get_running_loop()  # once: both the task and the timer need it
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline scope must be entered inside a task")
        self.task = task
        self._deadlines._register(self, loop)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._deadlines._scopes.pop(self, None)
        if self.expired and exc_type is asyncio.CancelledError:
            assert self.task is not None
            if self.task.uncancel() == 0:
                raise TimeoutError(f"deadline of {self._seconds}s exceeded") from exc

    # `async with` works too; plain `with` spares two coroutines (entering awaits nothing).
    async def __aenter__(self) -> _Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Deadlines:
    """Hands out deadline scopes; one timer per event loop checks them all."""

    def __init__(self, resolution: float = 0.1) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        self._scopes: dict[_Scope, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def scope(self, seconds: float) -> _Scope:
        """`with deadlines.scope(30): ...` (inside a task) raises TimeoutError after ~30 s."""
        return _Scope(self, seconds)

    @property
    def active(self) -> int:
        return len(self._scopes)

    def _register(self, scope: _Scope, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            # An agent reused on a new event loop: the old loop's timer is gone with it.
            self._loop, self._timer = loop, None
            self._scopes.clear()
        scope.deadline = loop.time() + scope._seconds
        self._scopes[scope] = None
        if self._timer is None:
            self._timer = loop.call_later(self.resolution, self._check)

    def _check(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None or not self._scopes:
            return
        now = loop.time()
        for scope in list(self._scopes):
            if not scope.expired and now >= scope.deadline and scope.task is not None:
                scope.expired = True
                scope.task.cancel()
        self._timer = loop.call_later(self.resolution, self._check)
