"""The overview's trends: per-hour (last 24 h) or per-day (last 7 days) series of one tenant.

Each series is one aggregate query grouped by ``date_trunc`` in PostgreSQL, inside the
request's tenant scope (``frontend.access``) and restricted to the agents the member may
see; nothing is loaded row by row. Customer traffic leaves the dashboard's playground runs
out (``metadata.playground``, issue 19); spend (tokens, dollars) counts them, as the usage
ledger and the quotas do.

* ``runs``: customer runs created in the bucket; ``escalation_rate``: the share of them
  with a review request of their answer (tool approvals are no escalation);
  ``golden_rate``: of those that completed, the share whose answer cites a golden path
  (the learning loop's effect, as ``agentflow_golden_path_answer_ratio`` counts it).
* ``tokens``, ``cost``: every run created in the bucket (dollars as decimal strings).
* ``breaches``: review requests whose SLA was first breached in the bucket;
  ``decision_p50_s`` / ``decision_p90_s``: a person's time to decision (created to
  decided) of the requests decided in the bucket; ``queue_depth``: open requests at the
  bucket's end (now, for the current bucket).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.db.models import (
    Aggregate,
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    When,
)
from django.db.models.functions import Coalesce, Extract, Trunc

from agentflow.models import Agent, Run, RunStatus
from frontend.queries import PLAYGROUND, is_offline
from governance.services import restrict_to_visible_agents
from hitl.models import OPEN_STATUSES, HITLRequest, Kind

RECENT = 10  # rows of the recent escalations and breaches lists
EXCERPT = 90


@dataclass(frozen=True)
class Window:
    name: str
    unit: str  # a date_trunc unit
    step: timedelta
    buckets: int
    label: str


WINDOWS = {
    "24h": Window("24h", "hour", timedelta(hours=1), 24, "last 24 hours, per hour"),
    "7d": Window("7d", "day", timedelta(days=1), 7, "last 7 days, per day (UTC)"),
}
DEFAULT_WINDOW = "24h"


class TrendFilterForm(forms.Form):
    """``?window=24h|7d&agent=<id>``: the agent must be one the member may see."""

    window = forms.ChoiceField(choices=[(w, w) for w in WINDOWS], required=False)
    agent = forms.ChoiceField(choices=(), required=False)

    def __init__(self, data: Any, *, agents: dict[str, str]) -> None:
        super().__init__(data)
        self.agent_choices = [("", "all agents"), *sorted(agents.items(), key=lambda a: a[1])]
        cast(forms.ChoiceField, self.fields["agent"]).choices = self.agent_choices

    def clean_window(self) -> str:
        return str(self.cleaned_data.get("window") or DEFAULT_WINDOW)


class Percentile(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def bucket_starts(window: Window, now: datetime) -> list[datetime]:
    """The buckets' starts, oldest first; the last one holds ``now``."""
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if window.unit == "day":
        last = last.replace(hour=0)
    return [last - window.step * (window.buckets - 1 - i) for i in range(window.buckets)]


def _bucket(field: str, window: Window) -> Trunc:
    return Trunc(field, window.unit, output_field=DateTimeField(), tzinfo=UTC)


def _by_bucket(rows: QuerySet[Any], names: tuple[str, ...]) -> dict[datetime, dict[str, Any]]:
    return {row["bucket"]: {name: row[name] for name in names} for row in rows}


@dataclass(frozen=True)
class Scope:
    """Whose rows: the member's visible agents of the current tenant, maybe one of them."""

    user: Any
    tenant_id: int
    agent: str | None = None

    def runs(self) -> QuerySet[Run]:
        queryset = restrict_to_visible_agents(Run.objects.all(), self.user, self.tenant_id)
        return queryset.filter(agent_id=self.agent) if self.agent else queryset

    def reviews(self) -> QuerySet[HITLRequest]:
        queryset = restrict_to_visible_agents(
            HITLRequest.objects.exclude(kind=Kind.ACTION), self.user, self.tenant_id, "run__agent"
        )
        queryset = queryset.exclude(run__metadata__contains=PLAYGROUND)
        return queryset.filter(run__agent_id=self.agent) if self.agent else queryset


def _run_series(scope: Scope, window: Window, start: datetime) -> dict[datetime, dict[str, Any]]:
    customers = ~Q(metadata__contains=PLAYGROUND)
    completed = customers & Q(status=RunStatus.COMPLETED)
    escalated = Exists(
        HITLRequest.objects.filter(run=OuterRef("pk")).exclude(kind=Kind.ACTION).values("pk")
    )
    rows = (
        scope.runs()
        .filter(created_at__gte=start)
        .annotate(bucket=_bucket("created_at", window), escalated=escalated)
        .values("bucket")
        .annotate(
            runs=Count("pk", filter=customers),
            escalated_runs=Count("pk", filter=customers & Q(escalated=True)),
            completed=Count("pk", filter=completed),
            golden=Count(
                "pk", filter=completed & Q(result__sources__contains=[{"kind": "golden_path"}])
            ),
            tokens=Sum("tokens"),
            cost=Sum("cost_usd"),
        )
    )
    names = ("runs", "escalated_runs", "completed", "golden", "tokens", "cost")
    return _by_bucket(rows, names)


def _review_series(
    scope: Scope, window: Window, start: datetime
) -> tuple[dict[datetime, dict[str, Any]], dict[datetime, dict[str, Any]]]:
    breaches = (
        scope.reviews()
        .filter(breached_at__gte=start)
        .annotate(bucket=_bucket("breached_at", window))
        .values("bucket")
        .annotate(breaches=Count("pk"))
    )
    waited = Extract(F("decided_at") - F("created_at"), "epoch")
    decisions = (
        scope.reviews()
        .filter(decided_at__gte=start)
        .exclude(decision="")  # a person decided (an expiry is no decision)
        .annotate(bucket=_bucket("decided_at", window), waited=waited)
        .values("bucket")
        .annotate(
            decisions=Count("pk"),
            p50=Percentile("waited", 0.5),
            p90=Percentile("waited", 0.9),
        )
    )
    return _by_bucket(breaches, ("breaches",)), _by_bucket(decisions, ("decisions", "p50", "p90"))


def queue_depths(scope: Scope, window: Window, starts: list[datetime]) -> list[int]:
    """Open review requests at each bucket's end: those open at the window's start, plus
    those queued, less those closed, bucket by bucket (three small grouped queries; one
    filtered count per instant made Django compile 24 CASE filters, 160 ms a page)."""
    closed_at = Case(
        When(status__in=OPEN_STATUSES, then=None),
        default=Coalesce("decided_at", "updated_at"),  # an expiry may leave decided_at empty
        output_field=DateTimeField(),
    )
    first = starts[0]
    reviews = scope.reviews().annotate(closed_at=closed_at)
    base = (
        reviews.filter(created_at__lt=first)
        .filter(Q(closed_at=None) | Q(closed_at__gte=first))
        .count()
    )
    queued = _by_bucket(
        reviews.filter(created_at__gte=first)
        .annotate(bucket=_bucket("created_at", window))
        .values("bucket")
        .annotate(n=Count("pk")),
        ("n",),
    )
    closed = _by_bucket(
        reviews.filter(Q(decided_at__gte=first) | Q(decided_at=None, updated_at__gte=first))
        .filter(closed_at__gte=first)
        .annotate(bucket=_bucket("closed_at", window))
        .values("bucket")
        .annotate(n=Count("pk")),
        ("n",),
    )
    depths, depth = [], base
    for start in starts:
        depth += queued.get(start, {}).get("n", 0) - closed.get(start, {}).get("n", 0)
        depths.append(depth)
    return depths


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def series(scope: Scope, window: Window, now: datetime) -> dict[str, Any]:
    """Every series of the window, bucket by bucket (empty buckets are zeros, rates null)."""
    starts = bucket_starts(window, now)
    runs = _run_series(scope, window, starts[0])
    breaches, decisions = _review_series(scope, window, starts[0])
    out: dict[str, list[Any]] = {name: [] for name in _SERIES}
    for start in starts:
        run = runs.get(start, {})
        decided = decisions.get(start, {})
        out["runs"].append(run.get("runs", 0))
        out["escalated"].append(run.get("escalated_runs", 0))
        out["escalation_rate"].append(_rate(run.get("escalated_runs", 0), run.get("runs", 0)))
        out["completed"].append(run.get("completed", 0))
        out["golden"].append(run.get("golden", 0))
        out["golden_rate"].append(_rate(run.get("golden", 0), run.get("completed", 0)))
        out["tokens"].append(int(run.get("tokens") or 0))
        out["cost"].append(str(run.get("cost") or Decimal(0)))
        out["breaches"].append(breaches.get(start, {}).get("breaches", 0))
        out["decisions"].append(decided.get("decisions", 0))
        out["decision_p50_s"].append(_seconds(decided.get("p50")))
        out["decision_p90_s"].append(_seconds(decided.get("p90")))
    out["queue_depth"] = queue_depths(scope, window, starts)
    return {"buckets": [_iso(start) for start in starts], **out}


_SERIES = (
    "runs",
    "escalated",
    "escalation_rate",
    "completed",
    "golden",
    "golden_rate",
    "tokens",
    "cost",
    "breaches",
    "decisions",
    "decision_p50_s",
    "decision_p90_s",
    "queue_depth",
)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def totals(data: dict[str, Any]) -> dict[str, Any]:
    """The window's sums (and rates of the sums) for the charts' headings."""
    runs, completed = sum(data["runs"]), sum(data["completed"])
    return {
        "runs": runs,
        "escalated": sum(data["escalated"]),
        "escalation_rate": _rate(sum(data["escalated"]), runs),
        "golden": sum(data["golden"]),
        "golden_rate": _rate(sum(data["golden"]), completed),
        "tokens": sum(data["tokens"]),
        "cost": str(sum((Decimal(c) for c in data["cost"]), Decimal(0))),
        "breaches": sum(data["breaches"]),
        "decisions": sum(data["decisions"]),
        "queue_depth": data["queue_depth"][-1],
    }


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 1].rstrip() + "…"


def _request_row(request: HITLRequest, agents: dict[str, str]) -> dict[str, Any]:
    agent_id = str(request.context.get("agent_id") or "")
    return {
        "id": str(request.pk),
        "run_id": str(request.run_id),
        "agent": agents.get(agent_id, ""),
        "question": _excerpt(request.question),
        "reason": _excerpt(request.escalation_reason),
        "kind": request.kind,
        "priority": request.priority,
        "status": request.status,
        "created_at": _iso(request.created_at),
        "breached_at": _iso(request.breached_at),
    }


_REQUEST_FIELDS = (
    "id",
    "run_id",
    "context",
    "question",
    "escalation_reason",
    "kind",
    "priority",
    "status",
    "created_at",
    "breached_at",
)


def recent(scope: Scope, agents: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The newest escalations, and the newest first breaches of an SLA."""
    reviews = scope.reviews().only(*_REQUEST_FIELDS)
    escalations = reviews.order_by("-created_at", "-pk")[:RECENT]
    breaches = reviews.filter(breached_at__isnull=False).order_by("-breached_at", "-pk")[:RECENT]
    return {
        "escalations": [_request_row(r, agents) for r in escalations],
        "breaches": [_request_row(r, agents) for r in breaches],
    }


def offline(scope: Scope) -> bool:
    """Whether the runs shown cost nothing by design: every agent shown runs offline."""
    queryset = restrict_to_visible_agents(Agent.objects.all(), scope.user, scope.tenant_id, "pk")
    if scope.agent:
        queryset = queryset.filter(pk=scope.agent)
    configs = list(queryset.values_list("config", flat=True))
    return bool(configs) and all(is_offline(config) for config in configs)


def trends(
    scope: Scope, window: Window, agents: dict[str, str], now: datetime | None = None
) -> dict[str, Any]:
    """The overview's trends fragment: the window, every series, totals, recent lists."""
    data = series(scope, window, now or datetime.now(UTC))
    return {
        "window": window.name,
        "unit": window.unit,
        "label": window.label,
        "agent": scope.agent or "",
        "offline": offline(scope),
        "series": data,
        "totals": totals(data),
        "recent": recent(scope, agents),
    }
