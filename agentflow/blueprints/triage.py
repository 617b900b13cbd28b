"""``triage_agent`` on the platform: its config and the agent's recent tickets.

The kernel agent (`agentflow.kernel.blueprints.triage`) categorises, prioritises and routes a
ticket; duplicates are looked for among the tickets this agent triaged recently (its runs
of this tenant, completed or awaiting review), embedded with the platform's embedder
(`agentflow.knowledge.get_embedder`). A run's ticket is its message, with ``subject``,
``tier`` and ``ticket_id`` in the run's metadata. With ``update_ticket`` granted and a ticket
system in ``tool_settings``, the kernel agent writes the decision back to the ticket through
the run's tool invoker (the platform's `RunToolInvoker`: a ToolCall of the run, an action
review when the call needs approval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentflow.blueprints import BlueprintConfig, BlueprintSpec
from agentflow.kernel.blueprints.triage import (
    DEFAULT_CATEGORIES,
    DEFAULT_PRIORITY_CUES,
    DEFAULT_ROUTING_RULES,
    DEFAULT_TIER_BOOST,
    PastTicket,
    TriageAgent,
)
from agentflow.kernel.config import ConfigIssue
from agentflow.knowledge import get_embedder
from agentflow.models import Agent, Run, RunStatus

__all__ = ["SPEC", "DjangoTicketHistory", "TriageConfig"]

Phrase = Annotated[str, Field(min_length=1, max_length=100)]
Phrases = Annotated[list[Phrase], Field(max_length=500)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Priority = Literal["critical", "high", "medium", "low"]


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Name
    keywords: Phrases = Field(
        min_length=1, description="Words and phrases (case-insensitive, whole words)."
    )
    weight: float = Field(1.0, gt=0.0, le=10.0, description="Multiplies the keywords' score.")


class PriorityCues(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critical: Phrases = Field(default_factory=lambda: list(DEFAULT_PRIORITY_CUES["critical"]))
    high: Phrases = Field(default_factory=lambda: list(DEFAULT_PRIORITY_CUES["high"]))
    low: Phrases = Field(
        default_factory=lambda: list(DEFAULT_PRIORITY_CUES["low"]),
        description="Calm phrases: low, and never read as urgency ('not urgent').",
    )
    problem: Phrases = Field(
        default_factory=lambda: list(DEFAULT_PRIORITY_CUES["problem"]),
        description="A question mentioning none of these is a request for information: low.",
    )


class RoutingRule(BaseModel):
    """Every condition given must hold (keywords: any of them); the first match wins."""

    model_config = ConfigDict(extra="forbid")

    category: Name | None = None
    priority: Priority | None = None
    tier: Name | None = None
    keywords: Phrases | None = None
    queue: Name

    @field_validator("tier")
    @classmethod
    def _lower(cls, tier: str | None) -> str | None:
        return tier.lower() if tier else tier


class TriageConfig(BlueprintConfig):
    """Config of the `triage_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="triage_agent config")

    categories: list[Category] = Field(
        default_factory=lambda: [Category(**c) for c in DEFAULT_CATEGORIES],
        min_length=1,
        max_length=100,
        description="Ticket categories; the most weight of keyword matches wins (subject x2).",
    )
    default_category: Name = Field("general", description="When no keyword matches.")
    priority_cues: PriorityCues = Field(default_factory=PriorityCues)
    tier_boost: dict[Name, Annotated[int, Field(ge=0, le=3)]] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_BOOST),
        description="Levels a customer tier (run metadata `tier`) adds, up to high.",
    )
    frustration_threshold: float | None = Field(
        -0.6,
        ge=-1.0,
        le=0.0,
        description="A ticket whose sentiment is at or below this gains a level (up to "
        "high); null: tone never changes the priority.",
    )
    routing_rules: list[RoutingRule] = Field(
        default_factory=lambda: [RoutingRule(**r) for r in DEFAULT_ROUTING_RULES],
        max_length=200,
        description="The first rule whose conditions all hold names the queue.",
    )
    default_queue: Name = Field("general", description="When no rule matches.")
    duplicate_threshold: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Cosine similarity at or above which a recent ticket is a duplicate "
        "(offline embedder: distinct tickets of the labelled set stay below 0.49).",
    )
    duplicate_window_days: float = Field(
        14, gt=0, le=365, description="How far back duplicates are looked for."
    )
    duplicate_candidates: int = Field(
        200, ge=0, le=1000, description="At most this many recent tickets are compared."
    )

    @field_validator("tier_boost")
    @classmethod
    def _lower_tiers(cls, boost: dict[str, int]) -> dict[str, int]:
        return {tier.lower(): levels for tier, levels in boost.items()}


def _check(model: BaseModel) -> list[ConfigIssue]:
    """Category names are unique; a rule names a category that exists."""
    if not isinstance(model, TriageConfig):  # the spec's own model: always is
        return []
    issues = []
    names = [category.name for category in model.categories]
    for index, name in enumerate(names):
        if name in names[:index]:
            issues.append(ConfigIssue(f"categories[{index}].name", f"duplicate name {name!r}"))
    known = {*names, model.default_category}
    for index, rule in enumerate(model.routing_rules):
        if rule.category is not None and rule.category not in known:
            reason = f"unknown category {rule.category!r}; known: {', '.join(sorted(known))}"
            issues.append(ConfigIssue(f"routing_rules[{index}].category", reason))
    return issues


def _subject(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("subject") or metadata.get("ticket_label") or "")


class DjangoTicketHistory:
    """The tickets one agent triaged (its settled runs), in this tenant."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    async def recent_tickets(self, *, since: datetime, limit: int) -> Sequence[PastTicket]:
        rows = (
            Run.objects.filter(
                agent_id=self.agent_id,
                created_at__gte=since,
                status__in=(RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW),
            )
            .order_by("-created_at")
            .values_list("id", "input", "metadata", "created_at")[:limit]
        )
        return [
            PastTicket(
                run_id=str(run_id),
                text=f"{_subject(metadata)}\n{text}".strip(),
                created_at=at,
                ticket_id=str(metadata.get("ticket_id") or metadata.get("ticket_key") or ""),
            )
            async for run_id, text, metadata, at in rows
        ]


def _ports(agent: Agent, config: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"history": DjangoTicketHistory(str(agent.id)), "embedder": get_embedder()}


SPEC = BlueprintSpec(
    name="triage_agent",
    description="Category, priority (critical|high|medium|low from urgency cues, the "
    "customer's tier and tone), queue by the tenant's routing rules, and duplicates among "
    "the agent's recent tickets, for a support ticket.",
    config_model=TriageConfig,
    agent_class=TriageAgent,
    ports=_ports,
    check=_check,
)
