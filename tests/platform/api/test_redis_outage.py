"""Redis unreachable: PostgreSQL reads keep answering, what needs Redis is a 503 (issue 13).

The whole outage (the embedded Redis killed under ``make run`` and brought back) is in
``tests/platform/test_supervisor_faults.py``; these pin the two edges in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agentflow.server.errors import api_exception_handler
from tenants import ratelimit
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db


@pytest.fixture
def unreachable_redis(tmp_path: Path) -> Iterator[None]:
    """The rate limiter's client pointed at a socket nobody listens on."""
    saved = ratelimit._connection
    client = redis.Redis(unix_socket_path=str(tmp_path / "gone.sock"), socket_timeout=1)
    ratelimit._connection = (client, client.register_script(ratelimit._SCRIPT))
    try:
        yield
    finally:
        ratelimit._connection = saved


def test_reads_keep_working_when_the_rate_limiter_cannot_reach_redis(
    owner: Persona, agent: Any, unreachable_redis: None
) -> None:
    listed = owner.get("/api/v1/agents")
    assert listed.status_code == 200, listed.content
    assert listed.json()["results"][0]["id"] == str(agent.pk)


@pytest.mark.parametrize(
    "error", [redis.ConnectionError("socket gone"), redis.TimeoutError("Timeout reading")]
)
def test_a_redis_error_is_a_503_with_retry_after_in_the_error_shape(error: Exception) -> None:
    response = api_exception_handler(error, {})
    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.data["error_type"] == "service_unavailable"
    assert set(response.data) >= {"detail", "error_type", "correlation_id", "timestamp"}
