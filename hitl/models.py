"""Review requests, their history, reviewers' availability, escalation policies, settings.

A :class:`HITLRequest` holds everything a reviewer needs to decide (the question, the
proposed answer, intent, confidence, reason, sources) so the queue never has to reach
back into the run; its status moves ``pending → assigned → approved|edited|rejected``,
with ``escalated`` (moved up the role chain) and ``expired`` (the SLA policy closed it).
Every write goes through :mod:`hitl.services`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Now

from tenants.roles import member_review_ranks
from tenants.scoping import TenantOwnedModel


class Kind(models.TextChoices):
    LOW_CONFIDENCE = "low_confidence"
    ALWAYS_REVIEW = "always_review"  # an intent whose threshold is 0.0
    POLICY = "policy"  # a rule, a risky action, no usable answer (provider or budget)
    MANUAL = "manual"  # someone escalated the run by hand
    ACTION = "action"  # a tool call that needs approval (context["action"]: tool, arguments)


class Priority(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


# Stored next to the priority so the queue sorts by urgency, not alphabetically.
PRIORITY_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
# Who may review what: a request that needs an operator cannot be decided by a reviewer.
# The review ladder of the one role table (reviewer < operator < owner).
ROLE_RANK: dict[str, int] = member_review_ranks()


def chain_issues(chain: Any) -> list[str]:
    """Why ``chain`` is not a usable role ladder (empty when it is)."""
    if not isinstance(chain, list) or not chain:
        return ["must be a non-empty list of roles"]
    unknown = [role for role in chain if role not in ROLE_RANK]
    if unknown:
        return [f"unknown role(s) {unknown}; use {list(ROLE_RANK)}"]
    ranks = [ROLE_RANK[role] for role in chain]
    if ranks != sorted(set(ranks)):
        return ["roles must climb: each one higher than the one before"]
    return []


def sla_minutes_issues(minutes: Any) -> list[str]:
    """Why ``minutes`` is not a ``{priority: positive minutes}`` table (empty when it is)."""
    if not isinstance(minutes, dict):
        return ["must be an object of priority: minutes"]
    issues = [f"unknown priority {name!r}" for name in minutes if name not in PRIORITY_RANK]
    issues += [
        f"{name}: minutes must be a positive integer"
        for name, value in minutes.items()
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0
    ]
    return issues


class Status(models.TextChoices):
    PENDING = "pending"  # waiting for someone to claim it
    ASSIGNED = "assigned"  # held by one reviewer
    ESCALATED = "escalated"  # moved up the role chain, waiting for a higher role
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    EXPIRED = "expired"  # closed by the SLA policy (auto-reject) or because the run ended


OPEN_STATUSES: tuple[str, ...] = (Status.PENDING, Status.ASSIGNED, Status.ESCALATED)
DECIDED_STATUSES: tuple[str, ...] = (
    Status.APPROVED,
    Status.EDITED,
    Status.REJECTED,
    Status.EXPIRED,
)


class Decision(models.TextChoices):
    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"


DECISION_STATUS: dict[str, str] = {
    Decision.APPROVE: Status.APPROVED,
    Decision.EDIT: Status.EDITED,
    Decision.REJECT: Status.REJECTED,
}


class OnBreach(models.TextChoices):
    ESCALATE = "escalate", "Reassign one step up the role chain and notify"
    NOTIFY = "notify", "Notify only"


class OnExpiry(models.TextChoices):
    AUTO_REJECT = "auto_reject", "Reject with the hand-off message"
    ESCALATE = "escalate", "Hand to the top of the role chain and notify"


class OnReject(models.TextChoices):
    HANDOFF = "handoff", "Deliver the hand-off message"
    CLOSE_THREAD = "close_thread", "Close the conversation thread, deliver nothing"


class EscalationPolicy(TenantOwnedModel):
    """Rules for the requests that match it (the first enabled match by ``position``).

    Empty ``priorities``/``intents``/``kinds`` match anything. ``chain`` is the ladder of
    roles a request climbs on each breach; its first role is who reviews it at first, so
    a rule can send, say, every critical refund straight to operators.
    """

    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField(default=100)
    enabled = models.BooleanField(default=True)
    priorities = models.JSONField(default=list, blank=True)
    intents = models.JSONField(default=list, blank=True)
    kinds = models.JSONField(default=list, blank=True)
    chain = models.JSONField(default=list)
    on_breach = models.CharField(max_length=20, choices=OnBreach.choices, default="escalate")
    # Minutes each higher level gets after an escalation; null: the priority's SLA again.
    escalation_minutes = models.PositiveIntegerField(null=True, blank=True)
    # Minutes after the first deadline at which the request expires; null: never.
    expire_after_minutes = models.PositiveIntegerField(null=True, blank=True)
    on_expiry = models.CharField(max_length=20, choices=OnExpiry.choices, default="auto_reject")
    notify_on_queue = models.BooleanField(default=False)
    notify_email = models.BooleanField(default=True)
    extra_emails = models.JSONField(default=list, blank=True)
    notify_slack = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="hitl_policy_unique_name")
        ]
        verbose_name_plural = "escalation policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:

        errors: dict[str, list[str]] = {}
        if issues := chain_issues(self.chain):
            errors["chain"] = issues
        for name in ("priorities", "intents", "kinds", "extra_emails"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors[name] = ["must be a list of strings"]
        if errors:
            raise ValidationError(errors)

    def matches(self, *, priority: str, intent: str, kind: str) -> bool:
        return (
            self.enabled
            and (not self.priorities or priority in self.priorities)
            and (not self.intents or intent in self.intents)
            and (not self.kinds or kind in self.kinds)
        )


class ReviewSettings(TenantOwnedModel):
    """A tenant's review settings (``agent`` null) or one agent's, which win over them."""

    agent = models.ForeignKey(
        "agentflow.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # {priority: minutes}; missing priorities use the tier's default.
    sla_minutes = models.JSONField(default=dict, blank=True)
    # What a rejected request delivers; "{reason}" is replaced by the reviewer's reason.
    handoff_message = models.TextField(blank=True)
    on_reject = models.CharField(max_length=20, choices=OnReject.choices, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(agent__isnull=True),
                name="hitl_settings_one_per_tenant",
            ),
            models.UniqueConstraint(
                fields=["tenant", "agent"],
                condition=models.Q(agent__isnull=False),
                name="hitl_settings_one_per_agent",
            ),
        ]
        verbose_name_plural = "review settings"

    def __str__(self) -> str:
        return f"review settings of {self.agent_id or 'tenant'}"

    def clean(self) -> None:

        errors: dict[str, list[str]] = {}
        if issues := sla_minutes_issues(self.sla_minutes):
            errors["sla_minutes"] = issues
        if self.agent is not None and self.agent.tenant_id != self.tenant_id:
            errors["agent"] = ["The agent belongs to another tenant."]
        if errors:
            raise ValidationError(errors)


class ReviewerAvailability(TenantOwnedModel):
    """Whether a member takes automatically assigned requests, and how many at once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    available = models.BooleanField(default=False)
    capacity = models.PositiveSmallIntegerField(default=5)
    last_assigned_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="hitl_availability_unique")
        ]
        verbose_name_plural = "reviewer availability"

    def __str__(self) -> str:
        return f"{self.user_id}: {'available' if self.available else 'away'} ({self.capacity})"


class HITLRequest(TenantOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(
        "agentflow.Run", on_delete=models.CASCADE, related_name="review_requests"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    priority = models.CharField(max_length=10, choices=Priority.choices)
    priority_rank = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)

    # What the reviewer decides on, copied from the run when it was queued.
    question = models.TextField()
    proposed_answer = models.TextField(blank=True)  # empty: no answer to approve
    intent = models.CharField(max_length=100, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    escalation_reason = models.CharField(max_length=2000, blank=True)
    sources = models.JSONField(default=list, blank=True)
    # Where the answer goes: agent, session, end user and conversation thread of the run.
    context = models.JSONField(default=dict, blank=True)

    policy = models.ForeignKey(
        EscalationPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    required_role = models.CharField(max_length=20)
    escalation_level = models.PositiveSmallIntegerField(default=0)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)

    sla_deadline = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    breached_at = models.DateTimeField(null=True, blank=True)  # the first breach
    # The current level's deadline passed and was handled (an escalation starts a new one).
    deadline_breached = models.BooleanField(default=False)
    # When the SLA sweep must next look at this request (null: nothing left to time).
    next_check_at = models.DateTimeField(null=True, blank=True)

    decision = models.CharField(max_length=10, choices=Decision.choices, blank=True)
    response = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # One open review per run: a second escalation of the same run is a conflict.
            models.UniqueConstraint(
                fields=["run"],
                condition=models.Q(status__in=["pending", "assigned", "escalated"]),
                name="hitl_one_open_request_per_run",
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "status", "-priority_rank", "sla_deadline"]),
            models.Index(fields=["tenant", "assignee", "status"]),
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["tenant", "decided_at"]),
            # The overview's SLA-breach trend and latest breaches (issue 19): few rows.
            models.Index(
                fields=["tenant", "-breached_at"],
                condition=models.Q(breached_at__isnull=False),
                name="hitl_request_breached",
            ),
            # The SLA sweep's scan: only open requests with a timer, across tenants.
            models.Index(
                fields=["next_check_at"],
                condition=models.Q(next_check_at__isnull=False),
                name="hitl_request_due",
            ),
            # /metrics reads the open queue by priority, platform-wide.
            models.Index(
                fields=["priority", "created_at"],
                condition=models.Q(status__in=["pending", "assigned", "escalated"]),
                name="hitl_request_open",
            ),
        ]

    def __str__(self) -> str:
        return f"review {self.id} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class HITLEvent(TenantOwnedModel):
    """One entry of a request's history (queued, assigned, claimed, breached, decided...)."""

    request = models.ForeignKey(HITLRequest, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=40)
    actor_type = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=100, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["request", "at"])]

    def __str__(self) -> str:
        return f"{self.request_id} {self.action}"
