"""Input validation and output shapes of the agents API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from agentflow.core.api.serializers import PriorityField, StrictSerializer
from agentflow.models import Agent, KnowledgeDocument, Message, Run, RunStatus, Step


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


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


def agent_json(agent: Agent) -> dict[str, Any]:
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "blueprint": agent.blueprint,
        "config": agent.config,
        "version": agent.version,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def run_json(run: Run, *, include_result: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(run.pk),
        "agent_id": str(run.agent_id),
        "session_id": str(run.session_id) if run.session_id else None,
        "user_id": run.user_id,
        "status": run.status,
        "progress": run.progress,
        "priority": run.priority,
        "awaiting_review": run.status == RunStatus.AWAITING_REVIEW,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "tokens": run.tokens,
        "cost_usd": str(run.cost_usd),
    }
    if run.error:
        body["error"] = run.error
    if include_result and run.result is not None:
        body["result"] = run.result
    return body


def step_json(step: Step) -> dict[str, Any]:
    return {
        "index": step.index,
        "name": step.name,
        "duration_ms": step.duration_ms,
        "tokens": step.tokens,
        "cost_usd": str(step.cost_usd),
        "detail": step.detail,
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "message_id": str(message.pk),
        "role": message.role,
        "content": message.content,
        "created_at": iso(message.created_at),
    }


def document_json(document: KnowledgeDocument) -> dict[str, Any]:
    return {
        "id": str(document.pk),
        "agent_id": str(document.agent_id),
        "title": document.title,
        "content_type": document.content_type,
        "size_bytes": document.size_bytes,
        "created_at": iso(document.created_at),
    }


# --- output shapes (documented in the OpenAPI schema) -----------------------------------


class AgentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    blueprint = serializers.CharField()
    config = serializers.DictField()
    version = serializers.IntegerField()
    created_at = serializers.CharField(allow_null=True)
    updated_at = serializers.CharField(allow_null=True)


class RunResultSerializer(serializers.Serializer):
    content = serializers.CharField()
    intent = serializers.CharField()
    confidence = serializers.FloatField()
    escalated = serializers.BooleanField()
    escalation_reason = serializers.CharField(allow_null=True)
    proposed_answer = serializers.CharField(allow_null=True)
    thread_id = serializers.CharField()
    transition = serializers.CharField()
    sources = serializers.ListField(child=serializers.DictField())
    metadata = serializers.DictField()


class RunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    session_id = serializers.UUIDField(allow_null=True)
    user_id = serializers.CharField()
    status = serializers.ChoiceField(choices=RunStatus.values)
    progress = serializers.FloatField()
    priority = serializers.CharField()
    awaiting_review = serializers.BooleanField()
    created_at = serializers.CharField(allow_null=True)
    started_at = serializers.CharField(allow_null=True)
    finished_at = serializers.CharField(allow_null=True)
    tokens = serializers.IntegerField()
    cost_usd = serializers.CharField()
    error = serializers.CharField(required=False)
    result = RunResultSerializer(required=False)


class StepSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    duration_ms = serializers.FloatField()
    tokens = serializers.IntegerField()
    cost_usd = serializers.CharField()
    detail = serializers.DictField(
        help_text="What the stage did: intent, sources, handler, confidence."
    )


class RunWithStepsSerializer(RunSerializer):
    steps = StepSerializer(many=True)


class MessageSerializer(serializers.Serializer):
    message_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()
    created_at = serializers.CharField()


class DocumentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    title = serializers.CharField()
    content_type = serializers.CharField()
    size_bytes = serializers.IntegerField()
    created_at = serializers.CharField(allow_null=True)


class BlueprintSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    default_config = serializers.DictField()
    config_schema = serializers.DictField()


class KnowledgeUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="text/plain or text/markdown, UTF-8")
    title = serializers.CharField(required=False)
