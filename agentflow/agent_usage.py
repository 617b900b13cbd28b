"""Tokens and dollars per agent and UTC day, read from the runs (``agentflow costs``).

A run counts on the UTC day it was created, as the agent's daily budget counts it
(`agentflow.budgets`); every run counts, playground runs included, since they were paid for.
Read inside the caller's tenant scope: `Run.objects` sees one tenant's runs only.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from agentflow.models import Agent, Run

MAX_DAYS = 90
DEFAULT_DAYS = 7


def agent_days(*, now: datetime, days: int, agent: Agent | None = None) -> dict[str, Any]:
    """The last ``days`` UTC days (today included): one row per agent and day with runs,
    oldest day first, and the totals."""
    first_day = (now - timedelta(days=days - 1)).date()
    runs = Run.objects.filter(created_at__gte=datetime.combine(first_day, time.min, tzinfo=UTC))
    if agent is not None:
        runs = runs.filter(agent_id=agent.pk)
    rows = (
        runs.annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "agent_id", "agent__name")
        .annotate(n_runs=Count("pk"), n_tokens=Sum("tokens"), n_cost=Sum("cost_usd"))
        .order_by("day", "agent__name", "agent_id")
    )
    results = [
        {
            "day": row["day"].isoformat(),
            "agent_id": str(row["agent_id"]),
            "agent_name": row["agent__name"],
            "runs": row["n_runs"],
            "tokens": row["n_tokens"] or 0,
            "cost_usd": _usd(row["n_cost"]),
        }
        for row in rows
    ]
    return {
        "since": first_day.isoformat(),
        "until": now.date().isoformat(),
        "days": days,
        "results": results,
        "totals": {
            "runs": sum(row["runs"] for row in results),
            "tokens": sum(row["tokens"] for row in results),
            "cost_usd": _usd(sum((Decimal(row["cost_usd"]) for row in results), Decimal(0))),
        },
    }


def _usd(value: Decimal | None) -> str:
    # Exact to the micro-dollar the runs store; a string, as every cost_usd of the API.
    return str((value or Decimal(0)).quantize(Decimal("0.000001")))
