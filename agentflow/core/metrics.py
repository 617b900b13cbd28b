"""Prometheus metrics of the web and worker processes (SPEC 12).

With ``PROMETHEUS_MULTIPROC_DIR`` set before a process imports this, its values live in
files there, which the web's ``/metrics`` sums over all processes (docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "agentflow_http_requests_total",
    "HTTP requests by route and status class.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "agentflow_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CELERY_TASKS = Counter(
    "agentflow_celery_tasks_total",
    "Celery tasks finished, by task name and outcome.",
    ["task", "outcome"],
)
RUN_PERSISTENCE_FAILURES = Counter(
    "agentflow_run_persistence_failures_total",
    "Runs failed because a store could not keep the conversation, by pipeline stage.",
    ["stage"],
)
TASKS_NOT_SENT = Counter(
    "agentflow_tasks_not_sent_total",
    "Tasks the broker could not take when they were sent (their sweep sends them later).",
    ["task"],
)
QUEUE_DEPTH = Gauge(
    "agentflow_queue_depth",
    "Tasks waiting in each Celery queue, read from the broker when /metrics is scraped.",
    ["queue"],
    multiprocess_mode="mostrecent",  # read by the web at scrape time: its last reading
)
RUNS_UNSETTLED = Gauge(
    "agentflow_runs_unsettled",
    "Runs accepted and not settled yet (all tenants), by status, read at scrape time.",
    ["status"],
    multiprocess_mode="mostrecent",  # read by the web at scrape time: its last reading
)
WEBHOOK_DELIVERIES = Counter(
    "agentflow_webhook_deliveries_total",
    "Webhook deliveries received by this web process, by provider and verdict.",
    ["provider", "verdict"],
)
