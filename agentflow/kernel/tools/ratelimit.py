"""Per-tool rate limits: ``"100/hour"`` parsed strictly, enforced by a pluggable limiter.

`InMemoryRateLimiter` is a sliding-window log, exact within one process (the check and the
record happen under one lock with no await between them). The platform plugs in a Redis
limiter with the same `RateLimiter` shape to be exact across workers.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["InMemoryRateLimiter", "RateLimit", "RateLimiter"]

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE_RE = re.compile(r"([1-9][0-9]{0,8})/(second|minute|hour|day)")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` calls in any window of ``period_seconds``."""

    count: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.period_seconds < 1:
            raise ValueError("a rate limit needs a positive count and period")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"<count>/<second|minute|hour|day>"``, nothing else (no spaces, plurals or zero)."""
        match = _RATE_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"rate_limit {text!r} must look like '100/hour' "
                "(a positive count, '/', then second, minute, hour or day)"
            )
        return cls(int(match.group(1)), _PERIODS[match.group(2)])

    def __str__(self) -> str:
        unit = next(name for name, seconds in _PERIODS.items() if seconds == self.period_seconds)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.period_seconds}s"


@runtime_checkable
class RateLimiter(Protocol):
    """Admit or refuse one call under ``key`` (e.g. ``"<tenant>:<tool id>"``)."""

    async def acquire(self, key: str, limit: RateLimit) -> float | None:
        """None when admitted (and counted); else the seconds until a call would be admitted."""
        ...


class InMemoryRateLimiter:
    """Sliding-window log per key; exact under concurrency within a process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    async def acquire(self, key: str, limit: RateLimit) -> float | None:
        return self.try_acquire(key, limit)

    def try_acquire(self, key: str, limit: RateLimit) -> float | None:
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault(key, deque())
            horizon = now - limit.period_seconds
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) >= limit.count:
                return max(window[0] - horizon, 0.0)
            window.append(now)
            return None

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
