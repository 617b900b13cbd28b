"""The shapes of the API's answers (docs/api.md), as typed dictionaries: what the server
sends is what you get, and a field the server adds later is there too."""

from __future__ import annotations

from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

T = TypeVar("T")

RunStatus = Literal["pending", "processing", "awaiting_review", "completed", "failed", "cancelled"]
Decision = Literal["approve", "edit", "reject"]
Priority = Literal["low", "medium", "high", "critical"]
Provider = Literal["zendesk", "slack", "jira", "generic"]


class Page(TypedDict, Generic[T]):
    results: list[T]
    total: int
    limit: int
    offset: int
    has_more: bool


class Agent(TypedDict):
    id: str
    name: str
    blueprint: str
    config: dict[str, Any]
    version: int
    created_at: str | None
    updated_at: str | None


class KnowledgeDocument(TypedDict):
    id: str
    agent_id: str
    title: str
    content_type: str
    size_bytes: int
    created_at: str | None


class Run(TypedDict):
    id: str
    agent_id: str
    session_id: str | None
    user_id: str
    status: RunStatus
    progress: float
    priority: str
    awaiting_review: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    tokens: int
    cost_usd: str
    error: NotRequired[str]
    result: NotRequired[dict[str, Any]]


class Author(TypedDict):
    id: int
    username: str


class Message(TypedDict):
    message_id: str
    role: Literal["user", "assistant"]
    content: str
    created_at: str
    # The person who wrote an assistant message in a taken-over session; None otherwise.
    author: Author | None


class Feedback(TypedDict):
    id: str
    run_id: str
    message_id: str | None
    kind: Literal["rating", "thumbs"]
    rating: int | None
    thumbs: Literal["up", "down"] | None
    score: float
    comment: str
    source: str
    golden_path_id: str | None
    created_at: str


class ReviewRequest(TypedDict):
    id: str
    run_id: str
    agent_id: str | None
    session_id: str | None
    kind: str
    status: str
    priority: Priority
    question: str
    proposed_answer: str | None
    approvable: bool
    intent: str
    confidence: float | None
    escalation_reason: str
    sources: list[dict[str, Any]]
    required_role: str
    sla_deadline: str
    decision: Decision | None
    response: str | None


class WebhookEndpoint(TypedDict):
    id: str
    provider: Provider
    name: str
    url: str
    created_at: str
    rotated_at: str | None
    previous_secret_expires_at: str | None
    # Only in the answer that made or rotated it, and null when you chose the secret.
    secret: NotRequired[str | None]


class AgentUsageDay(TypedDict):
    day: str
    agent_id: str
    agent_name: str
    runs: int
    tokens: int
    cost_usd: str


class AgentUsageTotals(TypedDict):
    runs: int
    tokens: int
    cost_usd: str


class AgentUsage(TypedDict):
    since: str
    until: str
    days: int
    results: list[AgentUsageDay]
    totals: AgentUsageTotals
