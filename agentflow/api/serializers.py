"""Input validation and output shapes of the agents API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import Field

from agentflow.core.api.serializers import (
    AsIsCharField,
    AsIsChoiceField,
    AsIsDictField,
    AsIsFloatField,
    AsIsIntegerField,
    IsoDateTimeField,
    PriorityField,
    StrictSerializer,
    represent,
)
from agentflow.models import Run, RunStatus, ToolCallStatus
from agentflow.run_result import StoredResultField


class AgentCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    blueprint = serializers.CharField(max_length=100)
    config = serializers.DictField(required=False, default=dict)


class AgentUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    config = serializers.DictField(required=False)


# A run's message and a preflight's: the same text, the same limits.
MESSAGE_MAX_CHARS = 20_000


# Metadata keys the platform itself sets on runs (the dashboard's playground, an operator's
# tool try): from a client they would hide runs from learning or pass for an operator's.
RESERVED_METADATA_KEYS = ("playground", "tool_invocation")


class RunCreateSerializer(StrictSerializer):
    user_id = serializers.CharField(max_length=200)
    message = serializers.CharField(max_length=MESSAGE_MAX_CHARS, trim_whitespace=True)
    priority = PriorityField(required=False, default="medium")
    metadata = serializers.DictField(required=False, default=dict)

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(key for key in RESERVED_METADATA_KEYS if key in value)
        if reserved:
            raise serializers.ValidationError(
                f"{', '.join(reserved)}: reserved for the platform's own runs"
            )
        return value


class PreflightCreateSerializer(StrictSerializer):
    message = serializers.CharField(max_length=MESSAGE_MAX_CHARS, trim_whitespace=True)


class KnowledgeCreateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=300)
    content = serializers.CharField(trim_whitespace=False)
    content_type = serializers.ChoiceField(
        choices=["text/plain", "text/markdown"], required=False, default="text/markdown"
    )


# Serializer context of runs shown without their result (lists, live events, dashboard).
NO_RESULT = {"include_result": False}


# --- output shapes: the response bodies and their OpenAPI schema -------------------------


class AgentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    blueprint = serializers.CharField()
    config = AsIsDictField()
    version = AsIsIntegerField()
    created_at = IsoDateTimeField(allow_null=True)
    updated_at = IsoDateTimeField(allow_null=True)


class RunSerializer(serializers.Serializer):
    """A run; ``error`` only when it failed, ``result`` unless absent or not asked for
    (context ``include_result=False``: lists and live events leave it out)."""

    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    session_id = serializers.UUIDField(allow_null=True)
    user_id = serializers.CharField()
    status = AsIsChoiceField(choices=RunStatus.values)
    progress = AsIsFloatField()
    priority = serializers.CharField()
    awaiting_review = serializers.SerializerMethodField()
    created_at = IsoDateTimeField(allow_null=True)
    started_at = IsoDateTimeField(allow_null=True)
    finished_at = IsoDateTimeField(allow_null=True)
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()
    error = AsIsCharField(required=False)
    result = StoredResultField(required=False)

    @extend_schema_field(serializers.BooleanField())
    def get_awaiting_review(self, run: Run) -> bool:
        return bool(run.status == RunStatus.AWAITING_REVIEW)

    def get_fields(self) -> dict[str, Field]:
        fields = super().get_fields()
        if not self.context.get("include_result", True):
            del fields["result"]  # not even read: rows are often loaded without it
        return fields

    def to_representation(self, instance: Any) -> Any:
        body = super().to_representation(instance)
        if not instance.error:
            del body["error"]
        if "result" in body and body["result"] is None:
            del body["result"]
        return body


def run_body(run: Run, *, include_result: bool = True) -> dict[str, Any]:
    """``RunSerializer(run).data`` (``include_result=False``: with ``NO_RESULT``)."""
    return represent(RunSerializer, run, include_result=include_result)


class StepSerializer(serializers.Serializer):
    index = AsIsIntegerField()
    name = serializers.CharField()
    duration_ms = AsIsFloatField()
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()
    detail = AsIsDictField(help_text="What the stage did: intent, sources, handler, confidence.")


class PlanStepSerializer(serializers.Serializer):
    """One step of the path the agent's planner took (SPEC 4.8)."""

    index = AsIsIntegerField()
    node = serializers.CharField(help_text="The FSM state or behavior-tree node.")
    action = serializers.CharField(help_text="What it ran: `step:classify`, ..., or `none`.")
    outcome = AsIsChoiceField(choices=["success", "error", "skipped", "paused"])
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = AsIsFloatField()
    tokens = AsIsIntegerField()
    cost_usd = AsIsFloatField()
    transition = serializers.CharField(
        allow_null=True, help_text="The state it went to next; null for the last step."
    )
    via = serializers.CharField(
        allow_null=True,
        help_text="The rule that chose it: on_success, on_error, on_true, on_false, "
        "conditional_transitions[i].",
    )
    condition = serializers.CharField(
        allow_null=True, help_text="The CEL expression that chose the transition, if one did."
    )
    error = serializers.CharField(allow_null=True)


class RunStepsSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    status = serializers.CharField()
    steps = PlanStepSerializer(many=True)


class RunWithStepsSerializer(RunSerializer):
    steps = StepSerializer(many=True, source="steps.all")


class AuthorSerializer(serializers.Serializer):
    id = AsIsIntegerField(source="pk")
    username = AsIsCharField(source="get_username")


class MessageSerializer(serializers.Serializer):
    message_id = serializers.UUIDField(source="pk")
    role = AsIsChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    created_at = IsoDateTimeField()
    author = AuthorSerializer(
        allow_null=True,
        help_text="The person who wrote an assistant message in human mode; null for the "
        "agent's answers and the end user's messages.",
    )


class SessionSerializer(serializers.Serializer):
    """An end user's session and who answers it (``mode``); context ``channel``."""

    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    user_id = AsIsCharField()
    mode = AsIsChoiceField(
        choices=["agent", "human"], help_text="human: a person took it over; the agent is silent."
    )
    taken_by = AuthorSerializer(allow_null=True)
    taken_at = IsoDateTimeField(allow_null=True)
    channel = serializers.SerializerMethodField(
        help_text="slack, zendesk or jira when an event rule started its runs (the taker's "
        "replies go to the rule's reply URL too); null for API sessions."
    )
    created_at = IsoDateTimeField(allow_null=True)
    last_active = IsoDateTimeField(allow_null=True)

    def get_channel(self, session: Any) -> str | None:
        channel = self.context.get("channel")
        return str(channel) if channel else None


class SessionActionSerializer(StrictSerializer):
    """Taking over and handing back carry nothing (an empty object or no body at all)."""


class SessionReplySerializer(StrictSerializer):
    content = serializers.CharField(max_length=MESSAGE_MAX_CHARS, trim_whitespace=True)


class DocumentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    title = serializers.CharField()
    content_type = serializers.CharField()
    size_bytes = AsIsIntegerField()
    created_at = IsoDateTimeField(allow_null=True)


class BlueprintSerializer(serializers.Serializer):
    name = AsIsCharField()
    description = AsIsCharField()
    default_config = AsIsDictField()
    config_schema = AsIsDictField()
    default_planner = AsIsDictField(
        allow_null=True,
        help_text="The planner {type, definition} of an agent whose config names none.",
    )


class PreflightStepSerializer(serializers.Serializer):
    node = AsIsCharField(help_text="The FSM state or tree node.")
    action = AsIsCharField()
    model = AsIsCharField(allow_null=True, help_text="null: the step calls no model.")
    prompt_tokens = AsIsIntegerField()
    completion_tokens = AsIsIntegerField(help_text="The expected answer length.")
    completion_cap = AsIsIntegerField(help_text="The call's max_tokens.")
    usd = AsIsFloatField()
    max_usd = AsIsFloatField(help_text="With the answer at its cap: an upper bound.")


class PreflightPlannerSerializer(serializers.Serializer):
    type = AsIsChoiceField(choices=["fsm", "behavior_tree", "llm"])
    # DRF's metaclass makes `source` a declared field; the stubs see Field.source.
    source = AsIsChoiceField(choices=["agent", "default"])  # type: ignore[assignment]


class PreflightBudgetSerializer(serializers.Serializer):
    soft_usd = AsIsFloatField(allow_null=True)
    hard_usd = AsIsFloatField(allow_null=True)


class PreflightSerializer(serializers.Serializer):
    """The cost estimate of one message along an agent's plan (nothing ran)."""

    agent_id = serializers.UUIDField()
    planner = PreflightPlannerSerializer()
    verdict = AsIsChoiceField(
        choices=["ok", "warn", "refused"],
        help_text="refused: over the hard budget, the run would be refused before any "
        "call; warn: over the soft budget.",
    )
    # Text, not an enum: "decision" already names the review decisions' enum in the schema.
    decision = AsIsCharField(help_text="The kernel's: ok | warn | refuse.")
    tokens = AsIsIntegerField(help_text="Prompt and expected completion tokens, all steps.")
    usd = AsIsFloatField()
    max_usd = AsIsFloatField(help_text="What budgets are compared with.")
    spent_usd = AsIsFloatField()
    budget = PreflightBudgetSerializer(allow_null=True)
    method = AsIsCharField()
    token_scale = AsIsFloatField(
        help_text="Actual ÷ estimated tokens learnt from the agent's last 200 runs that spent "
        "tokens (1.0 until 20 of them did); every token count above is scaled by it."
    )
    steps = PreflightStepSerializer(many=True)


class PreflightErrorSerializer(serializers.Serializer):
    runs = AsIsIntegerField(help_text="Settled runs that spent tokens, of the last 200.")
    p50_error = AsIsFloatField(help_text="Median |estimated - actual| / actual tokens.")
    p95_error = AsIsFloatField()


class PreflightAccuracySerializer(serializers.Serializer):
    """How close the preflight before each run came to what the run spent."""

    agent_id = serializers.UUIDField()
    window = AsIsIntegerField(help_text="The latest settled runs looked at.")
    tokens = PreflightErrorSerializer(
        allow_null=True, help_text="null when none of those runs spent tokens."
    )


class KnowledgeUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="text/plain or text/markdown, UTF-8")
    title = serializers.CharField(required=False)


class ToolSerializer(serializers.Serializer):
    """A tool as an agent sees it (GET /agents/{id}/tools)."""

    id = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    provider = serializers.CharField(source="source", help_text="python, http or mcp:<server>.")
    input_schema = AsIsDictField()
    output_schema = AsIsDictField(allow_null=True)
    safety_level = AsIsChoiceField(choices=["safe", "requires_confirmation", "dangerous"])
    required_permissions = AsIsChoiceField(choices=["read", "execute", "admin"])
    granted = serializers.BooleanField(help_text="Whether the agent's config grants it.")
    level = AsIsChoiceField(
        choices=["none", "read", "execute", "admin"],
        help_text="The caller's governance level for it (tool permissions, role ceiling).",
    )
    can_call = serializers.BooleanField(help_text="Granted, at a sufficient level, allowed.")


class ToolInvokeSerializer(StrictSerializer):
    arguments = serializers.DictField(required=False, default=dict)


class ToolCallSerializer(serializers.Serializer):
    tool_call_id = serializers.UUIDField(source="pk")
    agent_id = serializers.UUIDField()
    run_id = serializers.UUIDField(allow_null=True)
    step = serializers.CharField()
    tool = serializers.CharField()
    arguments = AsIsDictField(help_text="As stored: PII redacted by the agent's guardrails.")
    result = serializers.JSONField(allow_null=True, help_text="Untrusted data, fenced.")
    status = AsIsChoiceField(choices=[choice.value for choice in ToolCallStatus])
    error = serializers.CharField()
    duration_ms = AsIsFloatField()
    cost_usd = serializers.CharField()
    actor = serializers.CharField()
    approval_id = serializers.UUIDField(allow_null=True)
    created_at = IsoDateTimeField()
    finished_at = IsoDateTimeField(allow_null=True)


class AgentUsageDaySerializer(serializers.Serializer):
    day = serializers.CharField(help_text="UTC day the runs were created, ISO date.")
    agent_id = serializers.UUIDField()
    agent_name = serializers.CharField()
    runs = AsIsIntegerField()
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()


class AgentUsageTotalsSerializer(serializers.Serializer):
    runs = AsIsIntegerField()
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()


class AgentUsageSerializer(serializers.Serializer):
    """Tokens and dollars per agent and UTC day (`agentflow.agent_usage`)."""

    since = serializers.CharField()
    until = serializers.CharField()
    days = AsIsIntegerField()
    results = AgentUsageDaySerializer(many=True, help_text="Only agent-days with runs.")
    totals = AgentUsageTotalsSerializer()
