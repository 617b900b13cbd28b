"""/healthz, /readyz and /metrics, and the correlation id on every response."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from agentflow.server.embedded import EmbeddedRedis
from agentflow.server.urls_parse import celery_redis_url


@pytest.fixture
def private_redis(tmp_path: Path, settings: Any) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, so stopping it disturbs nothing else."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = celery_redis_url(url)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "HEALTH_CHECK_TIMEOUT_SECONDS": 0.5}
    yield server
    server.stop()


def test_healthz_is_ok_without_touching_dependencies(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ok_when_everything_answers(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "broker"}


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_down_and_recovers(
    client: Client, private_redis: EmbeddedRedis
) -> None:
    assert client.get("/readyz").status_code == 200

    private_redis.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert "redis" in body["failing"]
    assert "database" not in body["failing"]
    assert body["checks"]["redis"]["ok"] is False

    private_redis.start()
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_metrics_are_prometheus_text(client: Client) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b'agentflow_http_requests_total{method="GET",route="healthz",status="2xx"}' in (
        response.content
    )


@pytest.mark.django_db
def test_metrics_show_the_backlog_of_each_queue_and_of_runs(
    client: Client, private_redis: EmbeddedRedis, settings: Any
) -> None:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL) as conn:
        queue = conn.SimpleQueue("maintenance")
        for n in range(3):
            queue.put({"n": n})
        queue.close()
    text = client.get("/metrics").content.decode()
    assert 'agentflow_queue_depth{queue="maintenance"} 3.0' in text
    assert 'agentflow_queue_depth{queue="runs"} 0.0' in text
    assert 'agentflow_runs_unsettled{status="pending"} 0.0' in text

    private_redis.stop()  # the broker gone: /metrics still answers, with the last values
    assert client.get("/metrics").status_code == 200


def test_correlation_id_is_echoed_when_safe(client: Client) -> None:
    response = client.get("/healthz", headers={"X-Correlation-ID": "abc-123"})
    assert response["X-Correlation-ID"] == "abc-123"


@pytest.mark.parametrize("bad", ["", "x" * 200, "has space", "new\u2028line", "<script>"])
def test_unsafe_correlation_id_is_replaced(client: Client, bad: str) -> None:
    response = client.get("/healthz", headers={"X-Correlation-ID": bad})
    generated = response["X-Correlation-ID"]
    assert generated != bad
    assert len(generated) == 32


def test_unknown_url_is_a_json_404_with_the_error_shape(client: Client) -> None:
    response = client.get("/api/v1/nothing-here", headers={"X-Correlation-ID": "c-404"})
    assert response.status_code == 404
    body = response.json()
    assert body["error_type"] == "not_found"
    assert body["correlation_id"] == "c-404"
    assert body["timestamp"].endswith("Z")
    assert set(body) == {"detail", "error_type", "correlation_id", "timestamp"}
