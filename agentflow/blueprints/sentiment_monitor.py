"""``sentiment_monitor_agent`` on the platform: its config and the customer's message history.

The kernel agent (`agentflow.kernel.blueprints.sentiment_monitor`) scores a message and
compares it with the customer's earlier messages of this tenant, read here: the ``user``
messages of every session of that end user (any agent of the tenant: the support agent's
conversations and this monitor's own runs), optionally only those of one thread (the
support agent's thread id, or the ``thread_id`` a monitor run was given in its metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db.models import Q
from pydantic import BaseModel, ConfigDict, Field

from agentflow.blueprints import BlueprintSpec
from agentflow.kernel.blueprints.sentiment_monitor import PastMessage, SentimentMonitorAgent
from agentflow.models import Agent, Message, MessageRole

__all__ = ["SPEC", "DjangoMessageHistory", "SentimentMonitorConfig"]


class SentimentMonitorConfig(BaseModel):
    """Config of the `sentiment_monitor_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, title="sentiment_monitor_agent config"
    )

    frustration_threshold: float = Field(
        -0.5,
        ge=-1.0,
        le=0.0,
        description="A message whose compound score (-1..1) is at or below this alerts.",
    )
    drop_delta: float = Field(
        0.6,
        gt=0.0,
        le=2.0,
        description="A message this far below the mean of the previous `window` messages "
        "(of the customer, or of the thread) alerts: the tone is falling fast.",
    )
    window: int = Field(
        5, ge=1, le=50, description="How many previous messages the trend compares with."
    )
    history_limit: int = Field(
        50, ge=1, le=500, description="How many of the customer's earlier messages are read."
    )
    escalate_on_alert: bool = Field(
        True,
        description="An alert puts the conversation in the review queue (reason "
        "'frustration: ...'); false: the alert is only in the run's output.",
    )


class DjangoMessageHistory:
    """The customer's earlier ``user`` messages in this tenant (the scoped manager)."""

    async def previous_messages(
        self, user_id: str, *, thread_id: str | None, limit: int
    ) -> Sequence[PastMessage]:
        rows = Message.objects.filter(role=MessageRole.USER, session__user_id=user_id)
        if thread_id is not None:
            rows = rows.filter(Q(thread_id=thread_id) | Q(run__metadata__thread_id=thread_id))
        newest = rows.order_by("-created_at").values_list("content", "created_at")[:limit]
        found = [PastMessage(text, at) async for text, at in newest]
        return found[::-1]


def _ports(agent: Agent, config: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"history": DjangoMessageHistory()}


SPEC = BlueprintSpec(
    name="sentiment_monitor_agent",
    description="Sentiment of each customer message (offline: VADER and support phrases), "
    "its trend over the customer's and the thread's messages, and a review request when "
    "the customer is frustrated or the tone falls fast.",
    config_model=SentimentMonitorConfig,
    agent_class=SentimentMonitorAgent,
    ports=_ports,
)
