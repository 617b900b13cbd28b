"""The agents app: agents, end-user sessions and threads, messages, runs and their steps.

Every row belongs to a tenant and is read through the tenant-scoped manager.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from pgvector.django import HnswIndex, VectorField

from tenants.scoping import TenantOwnedModel

EMBEDDING_DIMENSIONS = 384


class Agent(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    blueprint = models.CharField(max_length=100)
    config = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="agent_unique_name")]

    def __str__(self) -> str:
        return self.name


class SessionMode(models.TextChoices):
    """Who answers the end user: the agent, or a person who took the conversation over."""

    AGENT = "agent"
    HUMAN = "human"


class AgentSession(TenantOwnedModel):
    """One end user's conversation with one agent (the kernel's Session, persisted)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions")
    user_id = models.CharField(max_length=200)
    active_thread_id = models.CharField(max_length=64, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    state = models.JSONField(default=dict)  # the kernel session's metadata
    created_at = models.DateTimeField(db_default=Now())
    last_active = models.DateTimeField(db_default=Now())
    # Human takeover (agentflow.takeover). db_default: the run path upserts sessions in SQL.
    mode = models.CharField(
        max_length=10, choices=SessionMode.choices, default="agent", db_default="agent"
    )
    taken_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    taken_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "user_id"], name="session_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.user_id}"


class ThreadStatus(models.TextChoices):
    ACTIVE = "active"
    RESOLVED = "resolved"
    ABANDONED = "abandoned"


class Thread(TenantOwnedModel):
    id = models.CharField(primary_key=True, max_length=64)
    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="threads")
    topic = models.CharField(max_length=500, blank=True)
    intent = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=ThreadStatus.choices, default="active")
    escalated = models.BooleanField(default=False)
    resolution = models.TextField(blank=True)
    message_count = models.PositiveIntegerField(default=0)
    # The kernel's thread detector state (centroid, keywords), opaque here.
    state = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    last_active = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.topic[:50]


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class Message(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(AgentSession, on_delete=models.CASCADE, related_name="messages")
    thread_id = models.CharField(max_length=64, blank=True)
    run = models.ForeignKey(
        "Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    role = models.CharField(max_length=20, choices=MessageRole.choices)
    content = models.TextField()
    # The person who wrote an assistant message in human mode (agentflow.takeover); else null.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["session", "created_at"])]
        constraints = [
            # One assistant answer per run, whatever retries or redeliveries happen.
            models.UniqueConstraint(
                fields=["run", "role"],
                condition=models.Q(run__isnull=False),
                name="message_one_per_run_and_role",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class RunStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    AWAITING_REVIEW = "awaiting_review"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class Run(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="runs")
    session = models.ForeignKey(
        AgentSession, null=True, on_delete=models.SET_NULL, related_name="runs"
    )
    user_id = models.CharField(max_length=200)
    input = models.TextField()
    priority = models.CharField(max_length=10, default="medium")
    metadata = models.JSONField(default=dict)
    status = models.CharField(
        max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True
    )
    progress = models.FloatField(default=0.0)
    result = models.JSONField(null=True, blank=True)
    # Where the run's plan paused for a person, when it goes on after the decision
    # (agentflow.kernel.continuation); with "resume", the decision it goes on with.
    # Plan state (the customer's message among it): never shown, erased with the run.
    plan_snapshot = models.JSONField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    correlation_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The recovery sweep's own bookkeeping: how often it re-enqueued this run, and not
    # again before when (exponential backoff, so a long queue is not flooded with copies).
    recovery_attempts = models.PositiveSmallIntegerField(default=0)
    recover_after = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "status"]),
            # The dashboard's runs list (a tenant's newest) and overview trends (its runs
            # since a moment) without walking other tenants' rows on created_at (issue 19).
            models.Index(fields=["tenant", "-created_at"], name="run_tenant_created"),
            # The recovery sweep reads only unsettled runs, platform-wide.
            models.Index(
                fields=["status", "created_at"],
                condition=models.Q(status__in=["pending", "processing"]),
                name="run_unsettled",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class RunTransition(TenantOwnedModel):
    """Every state change of a run, recorded with the change itself."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=20)
    to_status = models.CharField(max_length=20)
    reason = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status}→{self.to_status}"


class Step(TenantOwnedModel):
    """One pipeline stage or planner step of a run, with its timing, tokens and cost."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    duration_ms = models.FloatField(default=0.0)
    tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    detail = models.JSONField(default=dict)

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="step_unique_index")]

    def __str__(self) -> str:
        return self.name


class KnowledgeDocument(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    content_type = models.CharField(max_length=50)
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.title


class KnowledgeChunk(TenantOwnedModel):
    document = models.ForeignKey(KnowledgeDocument, on_delete=models.CASCADE, related_name="chunks")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    text = models.TextField()
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)

    class Meta:
        indexes = [
            HnswIndex(
                name="knowledge_chunk_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["tenant", "agent"]),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.index}"


class MemoryCase(TenantOwnedModel):
    """Episodic memory: one exchange remembered for an end user of an agent."""

    id = models.CharField(primary_key=True, max_length=64)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    user_id = models.CharField(max_length=200, db_index=True)
    thread_id = models.CharField(max_length=64, blank=True)
    question = models.TextField()
    answer = models.TextField()
    intent = models.CharField(max_length=100, blank=True)
    resolved = models.BooleanField(default=False)
    effectiveness = models.FloatField(default=0.0)
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "agent", "user_id", "created_at"]),
            # Other users' resolved cases, newest first (the shared, anonymised pool).
            models.Index(
                fields=["tenant", "agent", "-created_at"],
                condition=models.Q(resolved=True),
                name="memorycase_resolved_recent",
            ),
        ]

    def __str__(self) -> str:
        return self.question[:50]


class ToolCallStatus(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    INVALID_OUTPUT = "invalid_output"
    # An approval's states: proposed; approved (claimed once, queued for execution); taken
    # by one worker (executing); or rejected. An executing call whose worker died is not
    # run again (its outcome is unknown): the sweep marks it an error.
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    EXECUTING = "executing"
    REJECTED = "rejected"


class ToolCall(TenantOwnedModel):
    """One call of a tool by a run's planner or an operator's "try this tool" (SPEC 3).

    ``arguments`` and ``result`` are stored redacted when the agent's guardrails redact PII,
    and ``result`` is bounded. ``idempotency_key`` is the call's id in the kernel registry:
    an approval executes the call under it exactly once.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tool_calls")
    # Null for an operator's invocation, which belongs to no run.
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.CASCADE, related_name="tool_calls"
    )
    step = models.CharField(max_length=100, blank=True)
    tool = models.CharField(max_length=200)
    arguments = models.JSONField(default=dict)
    # The exact arguments of a call awaiting approval (what approving executes); cleared
    # when it executes or is rejected, so only the redacted copy stays.
    pending_arguments = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=ToolCallStatus.choices)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0.0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    idempotency_key = models.CharField(max_length=64, unique=True)
    # The HITL action request that approves this call, by id, and the approver's role
    # (a dangerous call runs only when an operator or owner approved it).
    approval_id = models.UUIDField(null=True, blank=True)
    approver_role = models.CharField(max_length=20, blank=True)
    # Who made the call: "run" or the operator's actor ("api_key:<prefix>", "user:<id>").
    actor = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    # When it was approved / taken by a worker (the recovery sweep's clock).
    approved_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["run", "created_at"]),
            # The sweep reads only approved calls not finished yet, platform-wide.
            models.Index(
                fields=["status", "approved_at"],
                condition=models.Q(status__in=["approved", "executing"]),
                name="toolcall_unfinished_approved",
            ),
            models.Index(fields=["tenant", "agent", "created_at"]),
            # /metrics counts the last hour's calls, platform-wide.
            models.Index(fields=["created_at"], name="toolcall_created"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} ({self.status})"
