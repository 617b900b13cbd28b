"""Liveness, readiness and Prometheus endpoints (SPEC 12).

``/readyz`` names each dependency that failed so an operator knows where to
look: ``{"status": "unavailable", "failing": ["redis"], "checks": {...}}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis
import structlog
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from kombu import Connection
from kombu.exceptions import OperationalError as BrokerError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from agentflow.core.conf import setting_float
from agentflow.core.metrics import QUEUE_DEPTH, RUNS_UNSETTLED
from agentflow.models import Run, RunStatus
from agentflow.server import platform_metrics

log = structlog.get_logger(__name__)
platform_metrics.register()  # runs, reviews, LLM usage: read from PostgreSQL at scrape time
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists of their own.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _timeout() -> float:
    return setting_float("HEALTH_CHECK_TIMEOUT_SECONDS")


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=_timeout(), socket_connect_timeout=_timeout()
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=_timeout()) as conn:
        conn.ensure_connection(max_retries=0)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    failing: list[str] = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            failing.append(name)
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            checks[name] = {"ok": True}
        checks[name]["ms"] = round((time.perf_counter() - started) * 1000, 2)
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": checks}
    return JsonResponse(body, status=503 if failing else 200)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    _observe_backlog()
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


_shared: dict[str, CollectorRegistry] = {}


def _registry() -> CollectorRegistry:
    """This process's registry; with ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
    multiprocess mode, set before every process starts: ``make run`` does), one that sums the
    counters every web and worker process writes there, plus the families read at scrape time.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    if path not in _shared:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=path)
        registry.register(platform_metrics.collector())
        _shared[path] = registry
    return _shared[path]


def _observe_backlog() -> None:
    """Queue depths and unsettled runs, read now: the backlog a runner has not taken yet.

    A broker or database that is down leaves the last values (and is logged): /metrics
    itself keeps answering, which is when an operator needs it.
    """
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=_timeout()) as conn:
            client = conn.default_channel.client
            for queue in settings.CELERY_TASK_QUEUES:
                depth = sum(client.llen(queue.name + suffix) for suffix in _PRIORITY_SUFFIXES)
                QUEUE_DEPTH.labels(queue.name).set(depth)
    except (BrokerError, redis.RedisError, OSError) as exc:
        log.warning("metrics.queue_depth_unavailable", error=f"{type(exc).__name__}: {exc}")
    try:
        # Platform-wide on purpose (an operator's gauge, no tenant's data): the unscoped manager.
        counts = dict(
            Run.unscoped.filter(status__in=(RunStatus.PENDING, RunStatus.PROCESSING))
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
    except DatabaseError as exc:
        log.warning("metrics.runs_unavailable", error=f"{type(exc).__name__}: {exc}")
        return
    for status in (RunStatus.PENDING, RunStatus.PROCESSING):
        RUNS_UNSETTLED.labels(status).set(counts.get(status, 0))
