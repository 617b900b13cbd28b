"""The learning app's data (SPEC 9, 10). Every row belongs to a tenant (tenant-scoped manager).

Models are grouped by feature; each group's services live in their own module.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models.functions import Now

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
