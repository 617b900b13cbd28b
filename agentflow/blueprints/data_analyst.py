"""``data_analyst_agent`` on the platform: its config and the read-only `SupportData` port.

Each catalogue template of `agentflow.kernel.blueprints.data_analyst` is one Django ORM
aggregation below, over the tenant-scoped default managers: a run executes inside its
tenant's scope, so another tenant's runs, feedback and reviews are not in the querysets at
all. Nothing here writes, and no text of the question reaches a query: only the template
id, a grouping dimension from a fixed set and two datetimes do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import (
    Avg,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDate
from pydantic import ConfigDict, Field

from agentflow.blueprints import BlueprintConfig, BlueprintSpec
from agentflow.kernel.blueprints.data_analyst import MAX_DAYS, DataAnalystAgent
from agentflow.models import Agent, Run
from hitl.models import HITLRequest
from learning.models import Feedback

__all__ = ["BLUEPRINT", "SPEC", "DataAnalystConfig", "OrmSupportData"]

BLUEPRINT = "data_analyst_agent"
_MAX_AGENT_NAMES = 1000


class DataAnalystConfig(BlueprintConfig):
    """Config of the `data_analyst_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, title="data_analyst_agent config"
    )

    default_days: int = Field(
        30, ge=1, le=MAX_DAYS, description="The period when a question names none, in days."
    )
    max_days: int = Field(
        MAX_DAYS,
        ge=1,
        le=MAX_DAYS,
        description="The longest period a question may cover, in days; longer asks are cut.",
    )
    min_score: float = Field(
        0.12,
        ge=0.0,
        le=1.0,
        description="Least TF-IDF similarity between a question and a query template for "
        "the template to be used; below it the agent lists what it can answer.",
    )


def _intent(prefix: str) -> Any:
    # KeyTextTransform, not KT(): KT's path cannot start with a relation (run__result).
    found = KeyTextTransform("intent", f"{prefix}result")
    return Coalesce(found, Value(""), output_field=TextField())


def _dimension(group_by: str, *, run_prefix: str, day_field: str) -> Any:
    if group_by == "day":
        return TruncDate(day_field, tzinfo=UTC)
    if group_by == "agent":
        return F(f"{run_prefix}agent__name")
    if group_by == "intent":
        return _intent(run_prefix)
    if group_by == "priority":
        return F("priority")
    raise ValueError(f"unknown dimension {group_by!r}")


def _grouped(rows: QuerySet[Any], group_by: str, dimension: Any) -> QuerySet[Any]:
    # Under a neutral alias: "agent" and "priority" are also field names of the models.
    return rows.annotate(group_key=dimension).values("group_key").order_by("group_key")


def _ratio(part: Any, whole: Any) -> Any:
    # Rounded in Python: a rate of a group without rows is null, not a division error.
    return Case(When(**{f"{whole}__gt": 0}, then=Cast(part, FloatField()) / F(whole)))


def _runs(start: datetime, end: datetime, agent: str | None) -> QuerySet[Run]:
    # The analyst's own questions are not support traffic: its runs are left out.
    runs = Run.objects.filter(created_at__gte=start, created_at__lt=end).exclude(
        agent__blueprint=BLUEPRINT
    )
    return runs.filter(agent__name=agent) if agent else runs


def _of_agent(rows: QuerySet[Any], agent: str | None) -> QuerySet[Any]:
    """Feedback or reviews of one agent's runs (by name), or all of them."""
    return rows.filter(run__agent__name=agent) if agent else rows


def _run_volume(
    group_by: str, start: datetime, end: datetime, agent: str | None
) -> list[dict[str, Any]]:
    runs = _runs(start, end, agent)
    dimension = _dimension(group_by, run_prefix="", day_field="created_at")
    return list(
        _grouped(runs, group_by, dimension).annotate(
            runs=Count("pk"),
            completed=Count("pk", filter=Q(status="completed")),
            failed=Count("pk", filter=Q(status="failed")),
        )
    )


def _escalation_rate(
    group_by: str, start: datetime, end: datetime, agent: str | None
) -> list[dict[str, Any]]:
    # Escalated: a person was asked to look at the run (every HITL request is one).
    reviewed = Exists(HITLRequest.objects.filter(run=OuterRef("pk")))
    runs = _runs(start, end, agent).annotate(was_escalated=reviewed)
    dimension = _dimension(group_by, run_prefix="", day_field="created_at")
    return list(
        _grouped(runs, group_by, dimension)
        .annotate(runs=Count("pk"), escalated=Count("pk", filter=Q(was_escalated=True)))
        .annotate(escalation_rate=_ratio("escalated", "runs"))
    )


def _csat(group_by: str, start: datetime, end: datetime, agent: str | None) -> list[dict[str, Any]]:
    # CSAT: the share of positive answers (a 4 or 5 rating, a thumbs up: score >= 0.75).
    feedback = _of_agent(Feedback.objects.filter(created_at__gte=start, created_at__lt=end), agent)
    dimension = _dimension(group_by, run_prefix="run__", day_field="created_at")
    return list(
        _grouped(feedback, group_by, dimension)
        .annotate(
            responses=Count("pk"),
            positive=Count("pk", filter=Q(score__gte=0.75)),
            avg_score=Avg("score"),
            avg_rating=Avg("rating"),
        )
        .annotate(csat=_ratio("positive", "responses"))
    )


def _cost(group_by: str, start: datetime, end: datetime, agent: str | None) -> list[dict[str, Any]]:
    runs = _runs(start, end, agent)
    dimension = _dimension(group_by, run_prefix="", day_field="created_at")
    rows = list(
        _grouped(runs, group_by, dimension).annotate(
            runs=Count("pk"), tokens=Sum("tokens"), cost_usd=Sum("cost_usd")
        )
    )
    for row in rows:  # dollars are Decimal in the table: floats in a JSON answer
        row["cost_usd"] = float(row["cost_usd"] or 0)
        row["cost_per_run_usd"] = row["cost_usd"] / row["runs"] if row["runs"] else None
    return rows


def _sla_breaches(
    group_by: str, start: datetime, end: datetime, agent: str | None
) -> list[dict[str, Any]]:
    reviews = _of_agent(
        HITLRequest.objects.filter(created_at__gte=start, created_at__lt=end), agent
    )
    dimension = _dimension(group_by, run_prefix="run__", day_field="created_at")
    return list(
        _grouped(reviews, group_by, dimension)
        .annotate(reviews=Count("pk"), breached=Count("pk", filter=Q(breached_at__isnull=False)))
        .annotate(breach_rate=_ratio("breached", "reviews"))
    )


Query = Callable[[str, datetime, datetime, str | None], list[dict[str, Any]]]
QUERIES: Mapping[str, Query] = {
    "run_volume": _run_volume,
    "escalation_rate": _escalation_rate,
    "csat": _csat,
    "cost": _cost,
    "sla_breaches": _sla_breaches,
}


def _run_template(
    template: str, group_by: str, start: datetime, end: datetime, agent: str | None
) -> list[dict[str, Any]]:
    query = QUERIES[template]  # a KeyError is a template the catalogue does not have
    rows = query(group_by, start, end, agent)
    for row in rows:
        key = row.pop("group_key")
        # A run without intent (a failed one), a review whose run's agent has no name...
        row[group_by] = key if key or group_by == "day" else "(none)"
    return rows


def _agent_names() -> list[str]:
    """The names a question may narrow to: the tenant's agents but the analysts."""
    names = Agent.objects.exclude(blueprint=BLUEPRINT).values_list("name", flat=True)
    return sorted(set(names[:_MAX_AGENT_NAMES]))


class OrmSupportData:
    """`SupportData` over the current tenant's rows (the run's scope), read-only."""

    async def agent_names(self) -> list[str]:
        return await sync_to_async(_agent_names)()

    async def query(
        self,
        template: str,
        group_by: str,
        start: datetime,
        end: datetime,
        *,
        agent: str | None = None,
    ) -> list[dict[str, Any]]:
        return await sync_to_async(_run_template)(template, group_by, start, end, agent)


def _ports(agent: Agent, config: dict[str, Any]) -> Mapping[str, Any]:
    return {"data": OrmSupportData()}


SPEC = BlueprintSpec(
    name=BLUEPRINT,
    description="Answers questions about your own support data (runs, escalation rate, "
    "CSAT, costs, SLA breaches by day, agent or intent) with a table and a chart, through "
    "fixed read-only query templates: never SQL written by a model.",
    config_model=DataAnalystConfig,
    agent_class=DataAnalystAgent,
    ports=_ports,
)
