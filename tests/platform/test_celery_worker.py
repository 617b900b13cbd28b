"""A real Celery worker on the embedded Redis carries the publisher's correlation id."""

from __future__ import annotations

import time

from agentflow.core.context import bind_correlation_id, correlation_id_var


def test_task_runs_on_a_real_worker_with_the_correlation_id(
    transactional_db: None, celery_worker_app: object
) -> None:
    from agentflow.server.tasks import echo_context

    token = bind_correlation_id("test-corr-123")
    try:
        result = echo_context.delay({"hello": "worker"})
    finally:
        correlation_id_var.reset(token)  # type: ignore[arg-type]
    assert result.get(timeout=20) == {
        "correlation_id": "test-corr-123",
        "payload": {"hello": "worker"},
    }


def test_task_without_a_caller_context_gets_its_task_id(
    transactional_db: None, celery_worker_app: object
) -> None:
    from agentflow.server.tasks import echo_context

    result = echo_context.delay()
    outcome = result.get(timeout=20)
    assert outcome["correlation_id"] == result.id


def test_heartbeat_task_records_liveness_in_redis(
    transactional_db: None, celery_worker_app: object
) -> None:
    from agentflow.server.tasks import heartbeat, last_heartbeat

    stamped = heartbeat.delay(source="test-worker")
    # ignore_result=True: wait for the key the worker writes, not for a result
    deadline = time.monotonic() + 20
    while last_heartbeat("test-worker") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stamped.id
    assert last_heartbeat("test-worker") is not None
