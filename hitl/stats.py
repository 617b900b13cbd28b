"""SLA figures of one tenant per UTC day: volume, median time to decision, breach rate.

* ``decided``/``median_seconds_to_decision``: human decisions (approved, edited,
  rejected) made that day, and the median of queued → decided for them;
* ``queued``/``breached``/``breach_rate``: requests queued that day and how many of them
  breached their SLA so far (today's rate can still rise while its requests are open).

Medians come from PostgreSQL (``percentile_cont``), not from rows pulled into Python.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Q,
)
from django.db.models.functions import TruncDate

from hitl.models import OPEN_STATUSES, HITLRequest, Status

HUMAN_DECISIONS = (Status.APPROVED, Status.EDITED, Status.REJECTED)


class Median(Aggregate):
    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _seconds_to_decision() -> Func:
    waited = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())
    return Func(waited, template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def daily_stats(*, now: datetime, days: int) -> dict[str, Any]:
    first_day = (now - timedelta(days=days - 1)).date()
    start = datetime.combine(first_day, time.min, tzinfo=UTC)
    queued_rows = (
        HITLRequest.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(queued=Count("pk"), breached=Count("pk", filter=Q(breached_at__isnull=False)))
    )
    human = HITLRequest.objects.filter(decided_at__gte=start, status__in=HUMAN_DECISIONS)
    decided_rows = (
        human.annotate(day=TruncDate("decided_at", tzinfo=UTC))
        .values("day")
        .annotate(decided=Count("pk"), median=Median(_seconds_to_decision()))
    )
    queued: dict[Any, dict[str, Any]] = {row["day"]: dict(row) for row in queued_rows}
    decided: dict[Any, dict[str, Any]] = {row["day"]: dict(row) for row in decided_rows}
    table = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        q, d = queued.get(day, {}), decided.get(day, {})
        table.append(
            {
                "day": day.isoformat(),
                "queued": q.get("queued", 0),
                "decided": d.get("decided", 0),
                "median_seconds_to_decision": _round(d.get("median")),
                "breached": q.get("breached", 0),
                "breach_rate": _rate(q.get("breached", 0), q.get("queued", 0)),
            }
        )
    overall = human.aggregate(median=Median(_seconds_to_decision()))
    total_queued = sum(row["queued"] for row in table)
    total_breached = sum(row["breached"] for row in table)
    open_counts = HITLRequest.objects.filter(status__in=OPEN_STATUSES).aggregate(
        pending=Count("pk", filter=Q(status=Status.PENDING)),
        assigned=Count("pk", filter=Q(status=Status.ASSIGNED)),
        escalated=Count("pk", filter=Q(status=Status.ESCALATED)),
        breached=Count("pk", filter=Q(breached_at__isnull=False)),
    )
    return {
        "days": table,
        "median_seconds_to_decision": _round(overall["median"]),
        "breach_rate": _rate(total_breached, total_queued),
        "open": open_counts,
    }
