"""The dashboard's read queries (writes go through each app's services).

Everything here runs inside the request's tenant scope (see :mod:`frontend.access`)
unless it says otherwise. Row JSON is the API's own (``RunSerializer``,
``ReviewRequestSerializer``): the page's first render, its live fragment and the live
events all carry the same dicts, so applying events to a page gives what a fresh load gives.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Left
from rest_framework import serializers

from agentflow.api.serializers import NO_RESULT, RunSerializer
from agentflow.core.api.serializers import (
    AsIsCharField,
    AsIsFloatField,
    AsIsIntegerField,
)
from agentflow.models import Agent, KnowledgeDocument, Run, RunStatus, ToolCall
from agentflow.run_result import plan_steps
from governance.services import restrict_to_visible_agents
from hitl.models import OPEN_STATUSES, HITLRequest, Kind
from hitl.serializers import ReviewRequestSerializer
from tenants.context import tenant_scope
from tenants.models import Tenant, UsageDay
from tenants.services import usage_this_month

RUNS_LIMIT = 50  # rows of the runs list (newest first); the live JS keeps the same cap
QUEUE_LIMIT = 200
OVERVIEW_MINUTES = 15
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.PROCESSING)  # what concurrent_runs counts


# --- runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilters:
    status: str | None = None
    agent: str | None = None  # an agent id (str of a UUID)
    since: datetime | None = None

    def as_data(self) -> dict[str, str]:
        """For the page (data attributes the live JS filters events with)."""
        return {
            "status": self.status or "",
            "agent": self.agent or "",
            "since": self.since.isoformat().replace("+00:00", "Z") if self.since else "",
        }


def _visible(queryset: QuerySet[Any], user: Any, tenant_id: int, field: str) -> QuerySet[Any]:
    return restrict_to_visible_agents(queryset, user, tenant_id, field)


EXCERPT_CHARS = 100


def run_rows(filters: RunFilters, *, user: Any, tenant_id: int) -> list[dict[str, Any]]:
    """The API's run rows, each with what a person scans a list for: the message's first
    words (``excerpt``), and the ``intent`` and ``confidence`` it settled with (null until
    then). Read from the database, not by loading whole inputs and results."""
    queryset = _visible(Run.objects.all(), user, tenant_id, "agent")
    if filters.status:
        queryset = queryset.filter(status=filters.status)
    if filters.agent:
        queryset = queryset.filter(agent_id=filters.agent)
    if filters.since:
        queryset = queryset.filter(created_at__gte=filters.since)
    runs = list(
        queryset.only(*_RUN_ROW_FIELDS)
        .annotate(
            head=Left("input", EXCERPT_CHARS + 1),
            intent=KT("result__intent"),
            confidence_text=KT("result__confidence"),
        )
        .order_by("-created_at", "-id")[:RUNS_LIMIT]
    )
    rows = list(RunSerializer(runs, many=True, context=NO_RESULT).data)
    for row, run in zip(rows, runs, strict=True):
        row.update(_glance(run))
    return rows


def _glance(run: Any) -> dict[str, Any]:
    head = " ".join(str(run.head or "").split())
    if len(head) > EXCERPT_CHARS:
        head = head[: EXCERPT_CHARS - 1].rstrip() + "…"
    try:
        confidence = round(float(run.confidence_text), 4) if run.confidence_text else None
    except ValueError:
        confidence = None
    return {"excerpt": head, "intent": run.intent or None, "confidence": confidence}


_RUN_ROW_FIELDS = (
    "id",
    "agent_id",
    "session_id",
    "user_id",
    "status",
    "progress",
    "priority",
    "created_at",
    "started_at",
    "finished_at",
    "tokens",
    "cost_usd",
    "error",
)


def agents_by_id(*, user: Any, tenant_id: int) -> dict[str, str]:
    """Agent id -> name, for labels (runs carry only the id)."""
    queryset = _visible(Agent.objects.all(), user, tenant_id, "pk")
    return {str(pk): name for pk, name in queryset.values_list("pk", "name")}


def is_offline(config: dict[str, Any] | None) -> bool:
    """Whether an agent calls no paid model: every provider is the offline one (an agent
    config without providers gets the offline one, as the kernel's config does)."""
    providers = ((config or {}).get("llm") or {}).get("providers") or [{"kind": "offline"}]
    return all(isinstance(p, dict) and p.get("kind", "offline") == "offline" for p in providers)


def offline_agents(*, user: Any, tenant_id: int) -> list[str]:
    """Ids of the visible agents that run on the offline provider only (free)."""
    queryset = _visible(Agent.objects.all(), user, tenant_id, "pk")
    return [str(pk) for pk, config in queryset.values_list("pk", "config") if is_offline(config)]


def tenant_is_offline(*, user: Any, tenant_id: int) -> bool:
    """Whether every visible agent runs offline (so the tenant's cost is zero by design)."""
    queryset = _visible(Agent.objects.all(), user, tenant_id, "pk")
    configs = list(queryset.values_list("config", flat=True))
    return bool(configs) and all(is_offline(config) for config in configs)


def actor_names(events: Iterable[Any]) -> dict[str, str]:
    """User id -> username for the user actors of ``events`` (audit or review history)."""
    ids = {e.actor_id for e in events if e.actor_type == "user" and str(e.actor_id).isdigit()}
    users = get_user_model().objects.filter(pk__in=ids).values_list("pk", "username")
    return {str(pk): username for pk, username in users}


def run_detail(run_id: Any, *, user: Any, tenant_id: int) -> Run | None:
    queryset = _visible(Run.objects.select_related("agent"), user, tenant_id, "agent")
    return queryset.filter(pk=run_id).first()


def run_sources(run: Run) -> dict[str, list[dict[str, Any]]]:
    """What the answer was built from, by kind (golden paths, knowledge, memory)."""
    result = run.result or {}
    grouped: dict[str, list[dict[str, Any]]] = {"golden_path": [], "knowledge": [], "memory": []}
    for source in readable_sources(result.get("sources"), str(run.agent_id)):
        grouped.setdefault(source["kind"], []).append(source)
    return grouped


def readable_sources(sources: Any, agent_id: str) -> list[dict[str, Any]]:
    """Sources as a person reads them: the article's title, which part of it, a link to it
    on the agent's page (knowledge), the score; the raw id kept for the hover."""
    readable = []
    for source in sources or []:
        if not isinstance(source, dict):
            continue
        kind = str(source.get("kind") or "other")
        ident = str(source.get("id") or "")
        document, _, part = ident.partition("#")
        entry = {**source, "kind": kind, "id": ident, "title": source.get("title") or ident}
        if kind == "knowledge" and document:
            entry["href"] = f"/agents/{agent_id}/#doc-{document}"
            entry["part"] = int(part) + 1 if part.isdigit() else None
        readable.append(entry)
    return readable


def run_plan_path(run: Run) -> list[dict[str, Any]]:
    """The planner's path of the run, in order: the steps GET /runs/{id}/steps serves.

    Empty until the run settled, and for runs that settled before runs recorded their
    planner's path (issue 16).
    """
    return plan_steps(run.result, run.started_at)


# --- review queue -------------------------------------------------------------------------


def queue_rows(*, user: Any, tenant_id: int) -> list[dict[str, Any]]:
    queryset = _visible(
        HITLRequest.objects.select_related("assignee", "decided_by"), user, tenant_id, "run__agent"
    )
    items = queryset.filter(status__in=OPEN_STATUSES).order_by(
        "-priority_rank", "sla_deadline", "created_at", "pk"
    )[:QUEUE_LIMIT]
    return list(ReviewRequestSerializer(items, many=True).data)


def review_request(request_id: Any, *, user: Any, tenant_id: int) -> HITLRequest | None:
    queryset = _visible(
        HITLRequest.objects.select_related("assignee", "decided_by", "run"),
        user,
        tenant_id,
        "run__agent",
    )
    return queryset.filter(pk=request_id).first()


# --- overview -------------------------------------------------------------------------------


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


PLAYGROUND = {"playground": True}  # the marker of the dashboard's playground runs


def tenant_metrics(tenant: Tenant, *, minutes: int = OVERVIEW_MINUTES) -> dict[str, Any]:
    """One tenant's live figures (call inside or outside its scope: it enters it)."""
    now = datetime.now(UTC)
    window_start = now - timedelta(minutes=minutes)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # Customer traffic: an operator's playground messages are no customer's (issue 19).
    customers = ~Q(metadata__contains=PLAYGROUND)
    with tenant_scope(tenant.pk):
        runs = Run.objects.aggregate(
            window=Count("pk", filter=Q(created_at__gte=window_start) & customers),
            today=Count("pk", filter=Q(created_at__gte=day_start) & customers),
            active=Count("pk", filter=Q(status__in=ACTIVE_RUN_STATUSES)),
        )
        reviews = HITLRequest.objects.aggregate(
            today=Count(
                "pk",
                filter=Q(created_at__gte=day_start) & ~Q(run__metadata__contains=PLAYGROUND),
            ),
            open=Count("pk", filter=Q(status__in=OPEN_STATUSES)),
            breached=Count(
                "pk",
                filter=Q(status__in=OPEN_STATUSES)
                & (Q(breached_at__isnull=False) | Q(sla_deadline__lt=now)),
            ),
        )
        cost_today = UsageDay.objects.filter(day=now.date()).aggregate(d=Sum("dollars"))["d"]
        agents = Agent.objects.count()
        knowledge = KnowledgeDocument.objects.aggregate(b=Sum("size_bytes"))["b"] or 0
    month = usage_this_month(tenant.pk)
    return {
        "runs_window": runs["window"],
        "runs_per_minute": round(runs["window"] / minutes, 2),
        "runs_today": runs["today"],
        "active_runs": runs["active"],
        "escalations_today": reviews["today"],
        "escalation_rate": _ratio(reviews["today"], runs["today"]),
        "cost_today": cost_today or Decimal(0),
        "cost_month": month["dollars"],
        "runs_month": month["runs"],
        "tokens_month": month["tokens"],
        "open_hitl": reviews["open"],
        "breaches": reviews["breached"],
        "agents": agents,
        "knowledge_bytes": knowledge,
    }


SUMMED = (
    "runs_window",
    "runs_per_minute",
    "runs_today",
    "active_runs",
    "escalations_today",
    "cost_today",
    "cost_month",
    "runs_month",
    "tokens_month",
    "open_hitl",
    "breaches",
    "agents",
    "knowledge_bytes",
)


def summed_metrics(per_tenant: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {name: sum(m[name] for m in per_tenant) for name in SUMMED}
    total["runs_per_minute"] = round(total["runs_per_minute"], 2)
    total["escalation_rate"] = _ratio(total["escalations_today"], total["runs_today"])
    return total


# Quota name -> the metric that consumes it (the usage ledger, or a live count).
QUOTA_USAGE = {
    "runs_per_month": "runs_month",
    "tokens_per_month": "tokens_month",
    "dollars_per_month": "cost_month",
    "concurrent_runs": "active_runs",
    "agents": "agents",
    "knowledge_bytes": "knowledge_bytes",
}


def quota_gauges(tenant: Tenant, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    quotas = tenant.quotas
    gauges = []
    for name, metric in QUOTA_USAGE.items():
        limit = getattr(quotas, name)
        used = metrics[metric]
        percent = None if not limit else min(100.0, round(float(used) / float(limit) * 100, 1))
        gauges.append(
            {
                "name": name,
                "used": str(used),
                "limit": None if limit is None else str(limit),
                "percent": percent,
            }
        )
    return gauges


class MoneyField(serializers.Field):
    """Decimals as strings, the way every API body carries money (other numbers as they are)."""

    def to_representation(self, value: Any) -> Any:
        return str(value) if isinstance(value, Decimal) else value


def _figure(field: type[serializers.Field]) -> Any:
    # Not required: the overview of nobody (no tenant, not a platform admin) has no figures.
    return field(required=False)


class MetricsSerializer(serializers.Serializer):
    """The figures of ``tenant_metrics`` (or ``summed_metrics``)."""

    runs_window = _figure(AsIsIntegerField)
    runs_per_minute = _figure(AsIsFloatField)
    runs_today = _figure(AsIsIntegerField)
    active_runs = _figure(AsIsIntegerField)
    escalations_today = _figure(AsIsIntegerField)
    escalation_rate = _figure(AsIsFloatField)
    cost_today = _figure(MoneyField)
    cost_month = _figure(MoneyField)
    runs_month = _figure(AsIsIntegerField)
    tokens_month = _figure(AsIsIntegerField)
    open_hitl = _figure(AsIsIntegerField)
    breaches = _figure(AsIsIntegerField)
    agents = _figure(AsIsIntegerField)
    knowledge_bytes = _figure(AsIsIntegerField)


class QuotaGaugeSerializer(serializers.Serializer):
    """One of ``quota_gauges``: amounts already written as strings."""

    name = AsIsCharField()
    used = AsIsCharField()
    limit = AsIsCharField(allow_null=True)
    percent = AsIsFloatField(allow_null=True)


class TenantFiguresSerializer(serializers.Serializer):
    id = AsIsIntegerField(source="tenant.pk")
    metrics = MetricsSerializer()


class OverviewSerializer(serializers.Serializer):
    """The overview's live figures (``?fragment=metrics``), from ``overview``."""

    metrics = MetricsSerializer(default=dict)
    quotas = QuotaGaugeSerializer(many=True, default=list)
    tenants = TenantFiguresSerializer(many=True, required=False)


def overview(
    tenant: Tenant | None, *, all_tenants: bool, minutes: int = OVERVIEW_MINUTES
) -> dict[str, Any]:
    """The overview's figures: the current tenant's, or every tenant's summed and each.

    The platform-wide view visits each tenant in its own scope (a few aggregate queries
    per tenant): fine for the tens of tenants a self-hosted install has.
    """
    data: dict[str, Any] = {"minutes": minutes}
    if all_tenants:
        rows: list[dict[str, Any]] = []
        for each in Tenant.objects.order_by("name"):
            rows.append({"tenant": each, "metrics": tenant_metrics(each, minutes=minutes)})
        data["tenants"] = rows
        data["metrics"] = summed_metrics([row["metrics"] for row in rows])
    elif tenant is not None:
        data["metrics"] = tenant_metrics(tenant, minutes=minutes)
    if tenant is not None:
        own = data["metrics"] if not all_tenants else tenant_metrics(tenant, minutes=minutes)
        data["quotas"] = quota_gauges(tenant, own)
    return data


# --- agents ---------------------------------------------------------------------------------


def agent_rows(*, user: Any, tenant_id: int) -> QuerySet[Agent]:
    queryset = _visible(Agent.objects.all(), user, tenant_id, "pk")
    return queryset.annotate(
        run_count=Count("runs", distinct=True), document_count=Count("documents", distinct=True)
    ).order_by("name")


def agent_detail(agent_id: Any, *, user: Any, tenant_id: int) -> Agent | None:
    return _visible(Agent.objects.all(), user, tenant_id, "pk").filter(pk=agent_id).first()


def thresholds(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each intent's confidence threshold (its own, or the default), from an agent config."""
    default = config.get("default_threshold")
    rows = [{"intent": "(default)", "threshold": default, "own": True}]
    for category in config.get("intent_categories") or []:
        if isinstance(category, dict):
            own = category.get("threshold")
            rows.append(
                {
                    "intent": category.get("name"),
                    "threshold": own if own is not None else default,
                    "own": own is not None,
                }
            )
    return rows


def documents(agent: Agent) -> QuerySet[KnowledgeDocument]:
    return KnowledgeDocument.objects.filter(agent=agent).order_by("-created_at")


# --- tool calls and action requests (issue 17) ------------------------------------------------

# A result is shown bounded: the stored one is bounded already, but a page lists many.
TOOL_JSON_CHARS = 4_000
# ToolCall.status of a call whose approval is not over yet (a pending review).
_AWAITING = "awaiting_approval"


def pretty_json(value: Any, limit: int = TOOL_JSON_CHARS) -> str:
    """``value`` as indented JSON for a <pre>, cut at ``limit`` characters (said so)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… (truncated: {len(text) - limit} more characters)"


def run_tool_calls(run: Run) -> list[dict[str, Any]]:
    """The run's tool calls in order, each with its approval request's status, if any."""
    calls = list(ToolCall.objects.filter(run=run).order_by("created_at", "id"))
    approval_ids = [call.approval_id for call in calls if call.approval_id is not None]
    approvals = dict(HITLRequest.objects.filter(pk__in=approval_ids).values_list("pk", "status"))
    return [
        {
            "id": str(call.pk),
            "tool": call.tool,
            "step": call.step,
            "status": call.status,
            "awaiting": call.status == _AWAITING,
            "error": call.error,
            "duration_ms": call.duration_ms,
            "cost_usd": call.cost_usd,
            "arguments": pretty_json(call.arguments),
            "result": None if call.result is None else pretty_json(call.result),
            "approval_id": str(call.approval_id) if call.approval_id else None,
            "approval_status": approvals.get(call.approval_id) if call.approval_id else None,
            "approver_role": call.approver_role,
        }
        for call in calls
    ]


def schema_fields(schema: Any) -> list[dict[str, Any]]:
    """The top-level properties of a JSON schema, as a reviewer reads them."""
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties")
    required = set(schema.get("required") or ())
    if not isinstance(properties, dict):
        return []
    rows = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = spec.get("type") or ("enum" if "enum" in spec else "any")
        rows.append(
            {
                "name": str(name),
                "type": " | ".join(map(str, kind)) if isinstance(kind, list) else str(kind),
                "required": name in required,
                "description": str(spec.get("description") or spec.get("title") or ""),
            }
        )
    return rows


def proposed_action(request: HITLRequest) -> dict[str, Any] | None:
    """The tool call an ``action`` request proposes (None for any other kind)."""
    if request.kind != Kind.ACTION:
        return None
    action = request.context.get("action") or {}
    arguments = action.get("arguments") or {}
    return {
        "tool_call_id": action.get("tool_call_id"),
        "tool": str(action.get("tool") or ""),
        "description": str(action.get("description") or ""),
        "safety_level": str(action.get("safety_level") or ""),
        # Unbounded: the reviewer decides on exactly these arguments, and edits them.
        "arguments": json.dumps(arguments, indent=2, ensure_ascii=False, sort_keys=True),
        "fields": schema_fields(action.get("input_schema")),
    }
