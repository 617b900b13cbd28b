"""The learning loop's response bodies: golden paths, feedback and playbooks.

One serializer per shape, used by the API, the dashboard and live events alike.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from agentflow.core.api.serializers import (
    AsIsBooleanField,
    AsIsCharField,
    AsIsChoiceField,
    AsIsDictField,
    AsIsIntegerField,
    AsIsListField,
    ZDateTimeField,
)
from learning.models import GoldenPathSource, PlaybookStatus
from learning.playbook_fsm import planner_of, planner_problems, planner_yaml


class RoundedFloatField(serializers.FloatField):
    """A ratio or score rounded to 4 places, as the API always wrote it."""

    def to_representation(self, value: Any) -> Any:
        return round(value, 4)


class GoldenPathSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    category = AsIsCharField()
    question = AsIsCharField()
    answer = AsIsCharField()
    # The stubs type `source` as Field.source; DRF's metaclass makes it a declared field.
    source = AsIsChoiceField(choices=GoldenPathSource.values)  # type: ignore[assignment]
    score = RoundedFloatField()
    usage_count = AsIsIntegerField()
    last_used_at = ZDateTimeField(allow_null=True)
    merged_count = AsIsIntegerField()
    is_active = AsIsBooleanField()
    source_run_id = serializers.UUIDField(allow_null=True)
    trace_summary = AsIsDictField()
    created_at = ZDateTimeField()
    updated_at = ZDateTimeField()


class GoldenPathHitSerializer(GoldenPathSerializer):
    """A search hit (``golden_paths.SearchHit``): the path and its similarity."""

    similarity = RoundedFloatField(help_text="Cosine similarity of the questions, 0..1.")

    def to_representation(self, instance: Any) -> Any:
        body = GoldenPathSerializer(instance.golden_path).data
        return {**body, "similarity": round(instance.score, 4)}


class ThumbsField(serializers.ChoiceField):
    def to_representation(self, value: Any) -> str:
        return "up" if value else "down"


class FeedbackSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    message_id = serializers.UUIDField(allow_null=True)
    kind = AsIsChoiceField(choices=["rating", "thumbs"])
    rating = AsIsIntegerField(allow_null=True)
    thumbs = ThumbsField(source="thumbs_up", choices=["up", "down"], allow_null=True)
    score = RoundedFloatField(help_text="Normalised to 0..1.")
    comment = AsIsCharField()
    # The stubs type `source` as Field.source; DRF's metaclass makes it a declared field.
    source = AsIsCharField()  # type: ignore[assignment]
    golden_path_id = serializers.UUIDField(
        allow_null=True, help_text="The golden path this feedback made or scored."
    )
    created_at = ZDateTimeField()


class PlaybookSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    category = AsIsCharField()
    version = AsIsIntegerField()
    name = AsIsCharField()
    steps = AsIsListField(child=serializers.CharField())
    transitions = AsIsListField(child=serializers.ListField(child=serializers.CharField()))
    sample_count = AsIsIntegerField()
    total_count = AsIsIntegerField()
    success_rate = RoundedFloatField()
    status = AsIsChoiceField(choices=PlaybookStatus.values)
    planner = serializers.SerializerMethodField(
        help_text="The FSM an agent can be told to run: {type: fsm, definition} over the "
        "support steps (docs/planners.md)."
    )
    planner_yaml = serializers.SerializerMethodField(
        help_text="The definition as YAML text, as an agent config's planner may hold it."
    )
    planner_validation = serializers.SerializerMethodField()
    created_at = ZDateTimeField()
    retired_at = ZDateTimeField(allow_null=True)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_planner(self, playbook: Any) -> dict[str, Any]:
        return planner_of(playbook)

    def get_planner_yaml(self, playbook: Any) -> str:
        return planner_yaml(planner_of(playbook))

    @extend_schema_field(
        inline_serializer(
            "PlannerValidation",
            {
                "valid": serializers.BooleanField(),
                "errors": serializers.ListField(child=serializers.CharField()),
            },
        )
    )
    def get_planner_validation(self, playbook: Any) -> dict[str, Any]:
        """The agent config's own check of the planner (each error naming its field)."""
        problems = planner_problems(planner_of(playbook))
        return {"valid": not problems, "errors": problems}
