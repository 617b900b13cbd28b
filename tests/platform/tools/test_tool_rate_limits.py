"""Tool rate limits in Redis: exact under concurrency, per key, across limiter instances."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from agentflow.kernel.tools import RateLimit, RateLimiter
from agentflow.tooling import RedisRateLimiter


def test_the_redis_limiter_is_a_kernel_rate_limiter() -> None:
    assert isinstance(RedisRateLimiter(settings.REDIS_URL), RateLimiter)


def test_exact_under_concurrent_threads_and_instances() -> None:
    """200 calls from 16 threads through 4 limiters (as if 4 workers) against 37/minute
    admit exactly 37; the refused are told when to retry."""
    key = f"tenant-1:tool-{uuid.uuid4().hex}"
    limit = RateLimit(37, 60)
    limiters = [RedisRateLimiter(settings.REDIS_URL) for _ in range(4)]
    start = threading.Barrier(16)

    def burst(worker: int) -> list[float | None]:
        start.wait()
        return [limiters[worker % 4].try_acquire(key, limit) for _ in range(200 // 16 + 1)]

    with ThreadPoolExecutor(16) as pool:
        results = [r for chunk in pool.map(burst, range(16)) for r in chunk]
    admitted = [r for r in results if r is None]
    refused = [r for r in results if r is not None]
    assert len(admitted) == 37
    assert len(refused) == len(results) - 37
    assert all(1 <= wait <= 60 for wait in refused)


def test_exact_under_concurrent_async_calls() -> None:
    key = f"tenant-1:tool-{uuid.uuid4().hex}"
    limiter = RedisRateLimiter(settings.REDIS_URL)

    async def main() -> list[float | None]:
        return await asyncio.gather(*(limiter.acquire(key, RateLimit(10, 3600)) for _ in range(60)))

    results = asyncio.run(main())
    assert sum(1 for r in results if r is None) == 10


def test_keys_are_independent() -> None:
    limiter = RedisRateLimiter(settings.REDIS_URL)
    base = uuid.uuid4().hex
    limit = RateLimit(1, 60)
    assert limiter.try_acquire(f"t1:{base}", limit) is None
    assert limiter.try_acquire(f"t1:{base}", limit) is not None
    assert limiter.try_acquire(f"t2:{base}", limit) is None


def test_redis_unreachable_refuses(tmp_path: object) -> None:
    limiter = RedisRateLimiter(f"unix://{tmp_path}/missing.sock")
    assert limiter.try_acquire("t:x", RateLimit(5, 60)) == 1.0
