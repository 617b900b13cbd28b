"""The learning app's data (SPEC 9, 10). Every row belongs to a tenant (tenant-scoped manager).

Models are grouped by feature; each group's services live in their own module.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Now
from pgvector.django import HnswIndex, VectorField

from agentflow.models import EMBEDDING_DIMENSIONS
from tenants.scoping import TenantOwnedModel

# =====================================================================================
# Integrations: signed webhooks, the activity stream, event rules and the activity graph
# (learning/webhooks/, learning/activity.py, learning/rules.py, learning/graph.py)
# =====================================================================================


class WebhookProvider(models.TextChoices):
    ZENDESK = "zendesk"
    SLACK = "slack"
    JIRA = "jira"
    GENERIC = "generic"


class WebhookEndpoint(TenantOwnedModel):
    """Where one provider delivers to (``/api/v1/webhooks/<provider>/<id>``), with its secret.

    HMAC verification needs the secret itself, so it is stored encrypted (Fernet), never
    hashed. During a rotation the previous secret stays valid until
    ``previous_secret_expires_at`` so the provider can be switched over without losing events.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=20, choices=WebhookProvider.choices)
    name = models.CharField(max_length=200, blank=True)
    secret_encrypted = models.TextField()
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.provider}:{self.pk}"


class ActivitySource(models.TextChoices):
    ZENDESK = "zendesk"
    SLACK = "slack"
    JIRA = "jira"
    GENERIC = "generic"
    INTERNAL = "internal"


class ActivityEvent(TenantOwnedModel):
    """One thing that happened: an accepted webhook or an internal event (run, review, ...).

    PostgreSQL is the source of truth; the per-tenant Redis Stream only carries the id.
    ``processed_at`` is set in the same transaction as the event's effects (graph, runs),
    so a second delivery of the same entry finds it set and does nothing; ``stream_id`` and
    ``published_at`` then record the entry that delivered it, and when.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.CharField(max_length=20, choices=ActivitySource.choices)
    kind = models.CharField(max_length=100)  # e.g. zendesk.ticket.created, run.completed
    payload = models.JSONField(default=dict)
    # Internal producers may pass a key to make recording idempotent (see the constraint).
    dedup_key = models.CharField(max_length=200, blank=True)
    correlation_id = models.CharField(max_length=128, blank=True)
    occurred_at = models.DateTimeField(db_default=Now())
    created_at = models.DateTimeField(db_default=Now())
    stream_id = models.CharField(max_length=40, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Failed processing attempts; after ACTIVITY_MAX_ATTEMPTS the event is set aside (failed).
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    # What processing did: rules matched, runs started, graph nodes touched, skips.
    outcome = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-occurred_at"]),
            models.Index(fields=["tenant", "kind", "-occurred_at"]),
            # The replay sweep's question: what has not been processed yet, oldest first.
            models.Index(
                fields=["created_at"],
                condition=models.Q(processed_at__isnull=True),
                name="activity_unprocessed",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "source", "dedup_key"],
                condition=~models.Q(dedup_key=""),
                name="activity_unique_dedup_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"


class WebhookDelivery(TenantOwnedModel):
    """One accepted delivery, unique per endpoint and provider delivery id (the dedup)."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    delivery_id = models.CharField(max_length=200)
    event = models.OneToOneField(ActivityEvent, on_delete=models.CASCADE, related_name="delivery")
    attempts = models.PositiveIntegerField(default=1)  # the provider's retries arrive here too
    received_at = models.DateTimeField(db_default=Now())
    last_attempt_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "delivery_id"], name="webhook_delivery_unique_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id}/{self.delivery_id}"


class WebhookSignedContent(TenantOwnedModel):
    """The SHA-256 of what one arrival's signature covered (provider, signed timestamp, body).

    Delivery ids are not signed, so they alone cannot stop a replay under a new id; this row,
    unique per tenant, can. Every arrival's digest is kept (a retry's fresh signature too)
    for ``WEBHOOK_REPLAY_RETENTION_SECONDS`` plus twice the timestamp tolerance.
    """

    digest = models.CharField(max_length=64)
    event = models.ForeignKey(ActivityEvent, on_delete=models.CASCADE, related_name="+")
    seen_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "digest"], name="webhook_signed_unique")
        ]
        indexes = [models.Index(fields=["tenant", "seen_at"], name="webhook_signed_seen")]

    def __str__(self) -> str:
        return self.digest


class EventRule(TenantOwnedModel):
    """Tenant rule: an external event of ``event_kind`` (fnmatch pattern) whose facts equal
    ``conditions`` starts a run of ``agent`` with the event's text as the message."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    event_kind = models.CharField(max_length=100)
    conditions = models.JSONField(default=dict, blank=True)
    agent = models.ForeignKey("agentflow.Agent", on_delete=models.CASCADE, related_name="+")
    priority = models.CharField(max_length=10, default="medium")
    # Where the answer is POSTed when the run completes (e.g. a Slack incoming webhook).
    reply_url = models.CharField(max_length=500, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="event_rule_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


class NodeKind(models.TextChoices):
    CUSTOMER = "customer"
    TICKET = "ticket"
    RESOLUTION = "resolution"
    ARTICLE = "article"
    AGENT = "agent"


class EdgeKind(models.TextChoices):
    OPENED = "opened"  # customer -> ticket
    FOLLOWED_UP = "followed_up"  # customer -> ticket (a later message on the same ticket)
    HANDLED = "handled"  # agent -> ticket
    RESOLVED_BY = "resolved_by"  # ticket -> resolution
    CITES = "cites"  # resolution -> article


class GraphNode(TenantOwnedModel):
    """A customer, ticket, resolution, article or agent, unique per tenant by (kind, key).

    ``key`` is the provider's identifier (``zendesk:ticket:123``, ``run:<uuid>``); an
    e-mail address is never a key (it is hashed), so the graph holds no contact data.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=NodeKind.choices)
    key = models.CharField(max_length=300)
    label = models.CharField(max_length=300, blank=True)
    category = models.CharField(max_length=100, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "key"], name="graph_node_unique_key")
        ]
        indexes = [
            models.Index(fields=["tenant", "kind", "category", "-last_seen"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


class GraphEdge(TenantOwnedModel):
    """A typed, timed edge; one per (event, kind, source, target), so rebuilding is idempotent."""

    source = models.ForeignKey(GraphNode, on_delete=models.CASCADE, related_name="out_edges")
    target = models.ForeignKey(GraphNode, on_delete=models.CASCADE, related_name="in_edges")
    kind = models.CharField(max_length=20, choices=EdgeKind.choices)
    occurred_at = models.DateTimeField()
    event = models.ForeignKey(
        ActivityEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "kind", "source", "target"], name="graph_edge_unique_per_event"
            )
        ]
        indexes = [
            models.Index(fields=["source", "occurred_at"]),
            models.Index(fields=["target", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.source_id} -{self.kind}-> {self.target_id}"


# =====================================================================================
# Learning loop: golden paths, feedback and playbooks
# (learning/golden_paths.py, learning/feedback.py, learning/playbooks.py)
# =====================================================================================


class GoldenPathSource(models.TextChoices):
    APPROVED = "approved"  # a reviewer approved the agent's answer as it was
    EDITED = "edited"  # a reviewer rewrote it: the delivered text is the reviewer's
    FEEDBACK = "feedback"  # a delivered answer the customer scored highly


class GoldenPath(TenantOwnedModel):
    """An answer a person vouched for, found again by the similarity of its question.

    The embedding is the question's (what the next customer's message is compared with).
    Near-duplicates of one agent's category are merged into one row (``merged_count``)
    instead of piling up; a deactivated row is never retrieved but kept for the record.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("agentflow.Agent", on_delete=models.CASCADE, related_name="+")
    category = models.CharField(max_length=100, blank=True)
    question = models.TextField()
    answer = models.TextField()
    trace_summary = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=10, choices=GoldenPathSource.choices)
    score = models.FloatField()  # how much the answer is vouched for, within [0, 1]
    usage_count = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    merged_count = models.PositiveIntegerField(default=1)
    is_active = models.BooleanField(default=True)
    source_run = models.ForeignKey(
        "agentflow.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            HnswIndex(
                name="golden_path_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["tenant", "agent", "is_active"], name="golden_path_scope"),
            models.Index(fields=["tenant", "created_at"], name="golden_path_created"),
        ]

    def __str__(self) -> str:
        return self.question[:60]


class FeedbackKind(models.TextChoices):
    RATING = "rating"  # 1-5 (CSAT)
    THUMBS = "thumbs"  # up or down


class Feedback(TenantOwnedModel):
    """A customer's or a help desk's verdict on one delivered answer (a run)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey("agentflow.Run", on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(
        "agentflow.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=FeedbackKind.choices)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)  # 1-5, kind=rating
    thumbs_up = models.BooleanField(null=True, blank=True)  # kind=thumbs
    score = models.FloatField()  # normalised to [0, 1]: 1→0, 5→1, down→0, up→1
    comment = models.TextField(blank=True)
    source = models.CharField(max_length=100, blank=True)  # who sent it: "zendesk-csat", ...
    golden_path = models.ForeignKey(
        GoldenPath, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["tenant", "run"], name="feedback_run")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.score:.2f}"


class PlaybookStatus(models.TextChoices):
    ACTIVE = "active"
    SUPERSEDED = "superseded"  # a newer version of the same category replaced it
    RETIRED = "retired"  # a person took it out of use


class Playbook(TenantOwnedModel):
    """The common ordered steps of an agent's successful runs of one category, versioned."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey("agentflow.Agent", on_delete=models.CASCADE, related_name="+")
    category = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    steps = models.JSONField(default=list)  # ordered step names: the playbook's states
    transitions = models.JSONField(default=list)  # [[from, to], ...]: the FSM's edges
    # The planner an agent can be told to run: {type: fsm, definition} over the support
    # steps (learning.playbook_fsm), derived from ``steps`` when extracted.
    planner = models.JSONField(default=dict)
    sample_count = models.PositiveIntegerField()  # successful traces it was extracted from
    total_count = models.PositiveIntegerField()  # traces of the category considered
    success_rate = models.FloatField()
    status = models.CharField(
        max_length=12, choices=PlaybookStatus.choices, default=PlaybookStatus.ACTIVE
    )
    created_at = models.DateTimeField(db_default=Now())
    retired_at = models.DateTimeField(null=True, blank=True)
    retired_by = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "agent", "category", "version"], name="playbook_version_unique"
            ),
            # At most one playbook of a category is suggested at a time.
            models.UniqueConstraint(
                fields=["tenant", "agent", "category"],
                condition=models.Q(status="active"),
                name="playbook_one_active",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
