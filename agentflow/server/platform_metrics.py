"""Platform metrics read from PostgreSQL when ``/metrics`` is scraped (SPEC 12).

Runs, tool calls, reviews and LLM usage are settled by Celery workers, whose in-process
counters nobody scrapes. Their rows are in the database already, so this collector asks
it at scrape time: the figures cover every worker process, and survive restarts. Each
family is one aggregate query over a bounded window through an index: the last hour or
day of runs and tool calls by ``created_at``, the open review requests by their partial
index. Labels are bounded: blueprints, statuses, priorities, stages, models and tools (the
last three capped to the busiest), never a tenant.

A family whose query fails is left out of that scrape and logged (a broken family must
never cost the whole ``/metrics``); a database that is down leaves out the rest too (one
connection timeout per scrape, not one per family).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import structlog
from django.db import InterfaceError, OperationalError
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
    Sum,
    TextField,
    Value,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.models import Run, RunStatus, Step, ToolCall
from hitl.models import OPEN_STATUSES, HITLRequest
from hitl.stats import Median

log = structlog.get_logger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# At most this many models, tools or stages get a series each (the busiest): bounded labels.
MAX_LABEL_VALUES = 50


def _seconds(start: str, end: str) -> Func:
    span = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    return Func(span, template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


class _Quantile(Median):
    template = "%(function)s(0.95) WITHIN GROUP (ORDER BY %(expressions)s)"


def _runs(now: datetime) -> Iterator[Metric]:
    runs = GaugeMetricFamily(
        "agentflow_runs_last_hour",
        "Runs created in the last hour (all tenants), by agent blueprint and status now.",
        labels=["blueprint", "status"],
    )
    rows = (
        Run.unscoped.filter(created_at__gte=now - HOUR)
        .values("agent__blueprint", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        runs.add_metric([row["agent__blueprint"], row["status"]], row["n"])
    yield runs


def _durations(now: datetime) -> Iterator[Metric]:
    seconds = GaugeMetricFamily(
        "agentflow_run_duration_seconds_last_hour",
        "Processing time (started → finished) of the runs created in the last hour that "
        "finished, by blueprint: quantile 0.5, 0.95 and max.",
        labels=["blueprint", "quantile"],
    )
    rows = (
        Run.unscoped.filter(
            created_at__gte=now - HOUR, started_at__isnull=False, finished_at__isnull=False
        )
        .values("agent__blueprint")
        .annotate(
            p50=Median(_seconds("started_at", "finished_at")),
            p95=_Quantile(_seconds("started_at", "finished_at")),
            top=Max(_seconds("started_at", "finished_at")),
        )
    )
    for row in rows:
        blueprint = row["agent__blueprint"]
        seconds.add_metric([blueprint, "0.5"], row["p50"] or 0.0)
        seconds.add_metric([blueprint, "0.95"], row["p95"] or 0.0)
        seconds.add_metric([blueprint, "max"], row["top"] or 0.0)
    yield seconds


def _stage_durations(now: datetime) -> Iterator[Metric]:
    seconds = GaugeMetricFamily(
        "agentflow_run_stage_duration_seconds_last_hour",
        "Duration of each pipeline stage or planner step of the runs created in the last "
        "hour that settled, by stage: quantile 0.5 and 0.95.",
        labels=["stage", "quantile"],
    )
    rows = (
        Step.unscoped.filter(run__created_at__gte=now - HOUR)
        .values("name")
        .annotate(p50=Median("duration_ms"), p95=_Quantile("duration_ms"), n=Count("id"))
        .order_by("-n")[:MAX_LABEL_VALUES]
    )
    for row in rows:
        seconds.add_metric([row["name"], "0.5"], (row["p50"] or 0.0) / 1000)
        seconds.add_metric([row["name"], "0.95"], (row["p95"] or 0.0) / 1000)
    yield seconds


def _llm_usage(now: datetime) -> Iterator[Metric]:
    tokens = GaugeMetricFamily(
        "agentflow_llm_tokens",
        "LLM tokens of the runs created in the window (1h, or today UTC), by model.",
        labels=["model", "window"],
    )
    cost = GaugeMetricFamily(
        "agentflow_llm_cost_usd",
        "LLM and tool cost in USD of the runs created in the window (1h, today UTC), by model.",
        labels=["model", "window"],
    )
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    hour = Q(created_at__gte=now - HOUR)
    day = Q(created_at__gte=today)
    rows = (
        Run.unscoped.filter(created_at__gte=min(today, now - HOUR), tokens__gt=0)
        .annotate(
            model=Coalesce(
                KeyTextTransform("model", "result__metadata"),
                Value("unknown", output_field=TextField()),
            )
        )
        .values("model")
        .annotate(
            hour_tokens=Sum("tokens", filter=hour),
            day_tokens=Sum("tokens", filter=day),
            hour_usd=Sum("cost_usd", filter=hour),
            day_usd=Sum("cost_usd", filter=day),
        )
        .order_by("-day_tokens")[:MAX_LABEL_VALUES]
    )
    for row in rows:
        tokens.add_metric([row["model"], "1h"], row["hour_tokens"] or 0)
        tokens.add_metric([row["model"], "today"], row["day_tokens"] or 0)
        cost.add_metric([row["model"], "1h"], float(row["hour_usd"] or 0))
        cost.add_metric([row["model"], "today"], float(row["day_usd"] or 0))
    yield tokens
    yield cost


def _tool_calls(now: datetime) -> Iterator[Metric]:
    calls = GaugeMetricFamily(
        "agentflow_tool_calls_last_hour",
        "Tool calls made in the last hour (runs' and operators'), by tool and status now.",
        labels=["tool", "status"],
    )
    rows = (
        ToolCall.unscoped.filter(created_at__gte=now - HOUR)
        .values("tool", "status")
        .annotate(n=Count("id"))
        .order_by("-n")[:MAX_LABEL_VALUES]
    )
    for row in rows:
        calls.add_metric([row["tool"], row["status"]], row["n"])
    yield calls


def _review_queue(now: datetime) -> Iterator[Metric]:
    size = GaugeMetricFamily(
        "agentflow_hitl_open_requests",
        "Review requests open now (pending, assigned, escalated), by priority.",
        labels=["priority"],
    )
    oldest = GaugeMetricFamily(
        "agentflow_hitl_oldest_open_age_seconds",
        "Age of the oldest open review request, by priority.",
        labels=["priority"],
    )
    breached = GaugeMetricFamily(
        "agentflow_hitl_open_breached",
        "Open review requests that breached their SLA, by priority.",
        labels=["priority"],
    )
    rows = (
        HITLRequest.unscoped.filter(status__in=OPEN_STATUSES)
        .values("priority")
        .annotate(
            n=Count("id"),
            first=Min("created_at"),
            late=Count("id", filter=Q(breached_at__isnull=False)),
        )
    )
    for row in rows:
        size.add_metric([row["priority"]], row["n"])
        oldest.add_metric([row["priority"]], max((now - row["first"]).total_seconds(), 0.0))
        breached.add_metric([row["priority"]], row["late"])
    yield from (size, oldest, breached)


def _golden_paths(now: datetime) -> Iterator[Metric]:
    completed = GaugeMetricFamily(
        "agentflow_runs_completed",
        "Runs created in the window (1h, 1d) that completed with an answer.",
        labels=["window"],
    )
    cited = GaugeMetricFamily(
        "agentflow_golden_path_answers",
        "Of those, the answers that cite a golden path among their sources.",
        labels=["window"],
    )
    ratio = GaugeMetricFamily(
        "agentflow_golden_path_answer_ratio",
        "Golden-path answers ÷ completed runs in the window (absent when none completed).",
        labels=["window"],
    )
    hour = Q(created_at__gte=now - HOUR)
    golden = Q(result__sources__contains=[{"kind": "golden_path"}])
    counts = Run.unscoped.filter(created_at__gte=now - DAY, status=RunStatus.COMPLETED).aggregate(
        day=Count("id"),
        day_golden=Count("id", filter=golden),
        hour=Count("id", filter=hour),
        hour_golden=Count("id", filter=hour & golden),
    )
    for window, key in (("1h", "hour"), ("1d", "day")):
        completed.add_metric([window], counts[key])
        cited.add_metric([window], counts[f"{key}_golden"])
        if counts[key]:
            ratio.add_metric([window], counts[f"{key}_golden"] / counts[key])
    yield from (completed, cited, ratio)


FAMILIES: dict[str, Callable[[datetime], Iterator[Metric]]] = {
    "runs": _runs,
    "run_durations": _durations,
    "stage_durations": _stage_durations,
    "llm_usage": _llm_usage,
    "tool_calls": _tool_calls,
    "review_queue": _review_queue,
    "golden_paths": _golden_paths,
}


class PlatformCollector(Collector):
    """The families above, read at each scrape (see the module's docstring)."""

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        for name, family in FAMILIES.items():
            started = time.perf_counter()
            try:
                metrics = list(family(now))  # all or nothing: no half-read family
            except (OperationalError, InterfaceError) as exc:
                log.warning("metrics.database_unavailable", family=name, error=_short(exc))
                return  # the database is down: the other families would only wait too
            except Exception:  # a bad query must cost one family, never the scrape
                log.exception("metrics.family_unavailable", family=name)
                continue
            log.debug("metrics.family_read", family=name, ms=_ms(started))
            yield from metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no database query when the collector is registered


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


_registered: list[PlatformCollector] = []


def register() -> None:
    """Add the collector to the default registry once (the web process's ``/metrics``)."""
    if not _registered:
        _registered.append(PlatformCollector())
        REGISTRY.register(_registered[0])


def collector() -> PlatformCollector:
    """The one collector (for a multiprocess-mode registry, `agentflow.server.health`)."""
    register()
    return _registered[0]
