"""Review requests' API input shapes and output bodies (API answers and live events share them)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agentflow.core.api.serializers import (
    AsIs,
    AsIsBooleanField,
    AsIsCharField,
    AsIsChoiceField,
    AsIsDictField,
    AsIsFloatField,
    AsIsIntegerField,
    AsIsListField,
    IsoDateTimeField,
    PriorityField,
    StrictSerializer,
    represent,
)
from agentflow.non_answers import stored
from hitl.models import OPEN_STATUSES, Decision, HITLRequest, Kind, ReviewerAvailability, Status

# --- input ----------------------------------------------------------------------------


class RespondSerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=Decision.values)
    response = serializers.CharField(
        required=False, allow_blank=True, max_length=20_000, trim_whitespace=False
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2_000)
    arguments = serializers.DictField(
        required=False,
        help_text="An edit of an action request: the tool call's new arguments (checked "
        "against its input schema).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        decision = attrs["decision"]
        response = attrs.get("response")
        if "arguments" in attrs:
            if decision != Decision.EDIT:
                raise serializers.ValidationError(
                    {"arguments": [f"Only an edit carries arguments, not {decision!r}."]}
                )
            if response is not None:
                raise serializers.ValidationError(
                    {"response": ["An edit of arguments carries no response text."]}
                )
        elif decision == Decision.EDIT:
            if response is None or not response.strip():
                raise serializers.ValidationError({"response": ["An edit needs the new text."]})
        elif response is not None:
            raise serializers.ValidationError(
                {"response": [f"Only an edit carries a response, not {decision!r}."]}
            )
        if decision == Decision.REJECT and not (attrs.get("reason") or "").strip():
            raise serializers.ValidationError({"reason": ["A rejection needs a reason."]})
        return attrs


class EscalateSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2_000)
    priority = PriorityField(required=False)


class ClaimSerializer(StrictSerializer):
    """A claim carries nothing (an empty object or no body at all)."""


class UnclaimSerializer(StrictSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2_000)


# --- output: the response bodies (and live events) and their OpenAPI schema --------------


class OrNone:
    """An empty value (``""``) is written as null, as the API always did for these fields."""

    def to_representation(self, value: Any) -> Any:
        return value or None


class OrNoneCharField(OrNone, serializers.CharField):
    pass


class OrNoneChoiceField(OrNone, serializers.ChoiceField):
    pass


class PersonSerializer(serializers.Serializer):
    id = AsIsIntegerField(source="pk")
    username = AsIsCharField(source="get_username")


class NonAnswerSerializer(serializers.Serializer):
    kind = AsIsChoiceField(
        choices=[
            "empty",
            "dont_know",
            "escalation_message",
            "template_answer",
            "handoff_message",
            "hand_off",
        ]
    )
    detail = AsIsCharField()


class ReviewRequestSerializer(serializers.Serializer):
    """One queue item. Live events carry exactly this, so applying them equals a fetch.

    Reads ``assignee`` and ``decided_by``: select them with the request."""

    id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    agent_id = AsIsCharField(source="context.agent_id", allow_null=True)
    session_id = AsIsCharField(source="context.session_id", allow_null=True)
    kind = AsIsChoiceField(choices=Kind.values)
    status = AsIsChoiceField(choices=Status.values)
    priority = AsIsChoiceField(choices=["low", "medium", "high", "critical"])
    question = AsIsCharField()
    proposed_answer = OrNoneCharField(allow_null=True)
    # A draft that is no answer (a hand-off, the escalation message, empty) cannot be
    # approved: edit or reject it.
    approvable = serializers.SerializerMethodField(
        help_text="False when the draft is no answer: approve answers 422 nothing_to_approve."
    )
    non_answer = serializers.SerializerMethodField()
    intent = AsIsCharField(allow_blank=True)
    confidence = AsIsFloatField(allow_null=True)
    escalation_reason = AsIsCharField(allow_blank=True)
    sources = AsIsListField(child=serializers.DictField())
    required_role = AsIsCharField()
    escalation_level = AsIsIntegerField()
    assignee = PersonSerializer(allow_null=True)
    assigned_at = IsoDateTimeField(allow_null=True)
    sla_deadline = IsoDateTimeField()
    expires_at = IsoDateTimeField(allow_null=True)
    breached = serializers.SerializerMethodField()
    breached_at = IsoDateTimeField(allow_null=True)
    decision = OrNoneChoiceField(choices=Decision.values, allow_null=True)
    response = OrNoneCharField(allow_null=True)
    reason = OrNoneCharField(allow_null=True)
    decided_by = PersonSerializer(allow_null=True)
    decided_at = IsoDateTimeField(allow_null=True)
    created_at = IsoDateTimeField()

    @extend_schema_field(serializers.BooleanField())
    def get_approvable(self, request: HITLRequest) -> bool:
        return stored(request.context, request.proposed_answer) is None

    @extend_schema_field(NonAnswerSerializer(allow_null=True))
    def get_non_answer(self, request: HITLRequest) -> dict[str, Any] | None:
        non_answer = stored(request.context, request.proposed_answer)
        return None if non_answer is None else dict(NonAnswerSerializer(non_answer).data)

    @extend_schema_field(serializers.BooleanField())
    def get_breached(self, request: HITLRequest) -> bool:
        return request.breached_at is not None


def request_body(request: HITLRequest) -> dict[str, Any]:
    """A review request as the API, the dashboard and live events show it."""
    return represent(ReviewRequestSerializer, request)


class ActorSerializer(serializers.Serializer):
    type = AsIsCharField(source="actor_type")
    id = AsIsCharField(source="actor_id", allow_blank=True)


class HistoryEntrySerializer(serializers.Serializer):
    at = IsoDateTimeField()
    action = AsIsCharField()
    actor = ActorSerializer(source="*")
    detail = AsIsDictField()


class ReviewerListSerializer(serializers.ListSerializer):
    """Loads the page's availability and open assignments in two queries (no N+1)."""

    def to_representation(self, data: Any) -> list[Any]:
        members = list(data)
        user_ids = [m.user_id for m in members]
        availability = {
            row.user_id: row for row in ReviewerAvailability.objects.filter(user_id__in=user_ids)
        }
        held = dict(
            HITLRequest.objects.filter(assignee_id__in=user_ids, status__in=OPEN_STATUSES)
            .values("assignee_id")
            .annotate(n=Count("pk"))
            .values_list("assignee_id", "n")
        )
        for member in members:
            row = availability.get(member.user_id)
            member.available = bool(row and row.available)
            member.capacity = row.capacity if row else 0
            member.open_assigned = held.get(member.user_id, 0)
        return super().to_representation(members)


class ReviewerSerializer(serializers.Serializer):
    """A reviewer (a ``Membership`` with its user selected); serialize pages with many=True."""

    id = AsIsIntegerField(source="user_id")
    username = AsIsCharField(source="user.get_username")
    role = AsIsCharField()
    available = AsIsBooleanField()
    capacity = AsIsIntegerField()
    open_assigned = AsIsIntegerField()

    class Meta:
        list_serializer_class = ReviewerListSerializer


class AsIsDateField(AsIs, serializers.DateField):
    pass


class StatsDaySerializer(serializers.Serializer):
    day = AsIsDateField()
    queued = AsIsIntegerField()
    decided = AsIsIntegerField()
    median_seconds_to_decision = AsIsFloatField(allow_null=True)
    breached = AsIsIntegerField()
    breach_rate = AsIsFloatField(allow_null=True)


class OpenCountsSerializer(serializers.Serializer):
    pending = AsIsIntegerField()
    assigned = AsIsIntegerField()
    escalated = AsIsIntegerField()
    breached = AsIsIntegerField()


class StatsSerializer(serializers.Serializer):
    """``hitl.stats.daily_stats``'s report."""

    days = StatsDaySerializer(many=True)
    median_seconds_to_decision = AsIsFloatField(allow_null=True)
    breach_rate = AsIsFloatField(allow_null=True)
    open = OpenCountsSerializer()
