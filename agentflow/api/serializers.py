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
)
from agentflow.models import Run, RunStatus
from agentflow.run_result import StoredResultField


class AgentCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    blueprint = serializers.CharField(max_length=100)
    config = serializers.DictField(required=False, default=dict)


class AgentUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    config = serializers.DictField(required=False)


class RunCreateSerializer(StrictSerializer):
    user_id = serializers.CharField(max_length=200)
    message = serializers.CharField(max_length=20_000, trim_whitespace=True)
    priority = PriorityField(required=False, default="medium")
    metadata = serializers.DictField(required=False, default=dict)


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


class StepSerializer(serializers.Serializer):
    index = AsIsIntegerField()
    name = serializers.CharField()
    duration_ms = AsIsFloatField()
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()
    detail = AsIsDictField(help_text="What the stage did: intent, sources, handler, confidence.")


class RunWithStepsSerializer(RunSerializer):
    steps = StepSerializer(many=True, source="steps.all")


class MessageSerializer(serializers.Serializer):
    message_id = serializers.UUIDField(source="pk")
    role = AsIsChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    created_at = IsoDateTimeField()


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


class KnowledgeUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="text/plain or text/markdown, UTF-8")
    title = serializers.CharField(required=False)
