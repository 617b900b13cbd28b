"""The Celery application, configured from Django settings (``CELERY_*``).

Every task runs through :class:`ContextTask`, the one wrapper that carries the
correlation id and the tenant from the publisher into the worker's logs and
context, and counts outcomes for Prometheus.
"""

from __future__ import annotations

import os
from typing import Any

import structlog
from celery import Celery, Task
from celery.signals import before_task_publish, celeryd_init, worker_init, worker_shutdown
from django.conf import settings
from opentelemetry import trace

from agentflow.core.context import bind_correlation_id, correlation_id_var, current_correlation_id
from agentflow.core.metrics import CELERY_TASKS
from agentflow.server.env import ImproperlyConfiguredEnv
from agentflow.server.telemetry import configure_tracing, shutdown_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")

# Message headers of our own: "correlation_id" is taken, it is AMQP's reply id.
CORRELATION_HEADER = "agentflow_correlation_id"
TENANT_HEADER = "agentflow_tenant_id"


class ContextTask(Task):
    """Binds the publisher's context in the worker for the task's duration."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        correlation_id = getattr(request, CORRELATION_HEADER, None) or request.id
        structlog.contextvars.clear_contextvars()
        token = bind_correlation_id(correlation_id)
        structlog.contextvars.bind_contextvars(
            task=self.name, task_id=request.id, tenant_id=getattr(request, TENANT_HEADER, None)
        )
        _describe_span(correlation_id, getattr(request, TENANT_HEADER, None))
        try:
            result = super().__call__(*args, **kwargs)
        except Exception:
            CELERY_TASKS.labels(self.name, "error").inc()
            raise
        finally:
            correlation_id_var.reset(token)  # type: ignore[arg-type]
            structlog.contextvars.clear_contextvars()
        CELERY_TASKS.labels(self.name, "ok").inc()
        return result


def _describe_span(correlation_id: str | None, tenant_id: str | None) -> None:
    """Our attributes on the task's span (the Celery instrumentation's), when tracing is on."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    if correlation_id:
        span.set_attribute("agentflow.correlation_id", correlation_id)
    if tenant_id is not None:
        span.set_attribute("agentflow.tenant_id", str(tenant_id))


@worker_init.connect
def _trace_the_worker(**_: Any) -> None:
    """Tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set (before the pool forks: the SDK's
    batch exporter restarts its thread in each child)."""
    configure_tracing("worker")


# Queues whose every task PostgreSQL recovers on its own: the runs sweep re-sends a run left
# `pending` or `processing` without a lease, the tool-call sweep an approved call no worker
# took (maintenance.recover_runs / recover_tool_calls, every RUN_RECOVERY_SECONDS).
RECOVERED_FROM_POSTGRES = frozenset({"runs"})


@celeryd_init.connect
def _no_broker_acks_where_postgres_recovers(
    conf: Any = None, options: dict[str, Any] | None = None, **_: Any
) -> None:
    """A worker consuming only such queues skips kombu's ack emulation on Redis.

    The emulation writes every delivered message to an unacked hash and index and removes it
    on the ack: two Redis round trips per run, each with a Redis client built for it, 11 % of
    the runner's CPU (issue 15). A killed runner's messages come back from the sweeps within
    RUN_PENDING_GRACE_SECONDS plus a sweep, far sooner than the visibility timeout would
    redeliver them; on a warm shutdown kombu still requeues the ones it holds.
    """
    queues = (options or {}).get("queues") or ()
    names = set(queues.split(",") if isinstance(queues, str) else queues)
    if conf is not None and names and names <= RECOVERED_FROM_POSTGRES:
        conf.broker_transport_options = {**conf.broker_transport_options, "ack_emulation": False}


@worker_shutdown.connect
def _flush_traces(**_: Any) -> None:
    shutdown_tracing()


@before_task_publish.connect
def _carry_context(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Stamp the current correlation id (and tenant, when set) on every published task."""
    if headers is None:
        return
    correlation_id = current_correlation_id()
    if correlation_id and not headers.get(CORRELATION_HEADER):
        headers[CORRELATION_HEADER] = correlation_id
    try:
        from tenants.context import current_tenant_id  # noqa: PLC0415 - optional: no tenants app in a kernel-only install
    except ImportError:  # the tenants app is optional for the kernel-only install
        return
    tenant_id = current_tenant_id()
    if tenant_id is not None and not headers.get(TENANT_HEADER):
        headers[TENANT_HEADER] = str(tenant_id)


app = Celery("agentflow", task_cls=ContextTask)


@app.on_configure.connect
def _load_settings_or_say_why(**_: Any) -> None:
    """Load Django's settings before Celery reads them: a missing or malformed variable is
    one line naming it, not the settings module's traceback inside Celery's CLI."""
    try:
        settings.INSTALLED_APPS  # noqa: B018 - the access loads the settings module
    except ImproperlyConfiguredEnv as exc:
        raise SystemExit(f"agentflow: configuration error: {exc}") from None


app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["agentflow.server"], related_name="tasks")
