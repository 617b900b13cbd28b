"""The per-minute request limiter's Redis client is made on first use by whichever request
thread comes first: concurrent first requests must all get a decision, never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tenants import ratelimit


@pytest.fixture
def first_use(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No client yet, and registering the script takes a while (as on a busy host)."""
    register = redis.Redis.register_script

    def slow_register(self: redis.Redis, script: Any) -> Any:
        time.sleep(0.05)
        return register(self, script)

    monkeypatch.setattr(redis.Redis, "register_script", slow_register)
    saved = ratelimit._connection
    ratelimit._connection = None
    yield
    ratelimit._connection = saved


def test_concurrent_first_requests_all_get_a_decision(first_use: None) -> None:
    threads, start = 8, threading.Barrier(8)
    decisions: list[ratelimit.RateDecision] = []
    errors: list[BaseException] = []

    def ask() -> None:
        start.wait()
        try:
            decisions.append(
                ratelimit.check_request_rate(
                    tenant_id=987_654, key_id=None, tenant_limit=1000, key_limit=None
                )
            )
        except BaseException as exc:  # the test reports what a request would have raised
            errors.append(exc)

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert errors == []
    assert len(decisions) == threads
    assert all(decision.allowed for decision in decisions)
