"""The JSON of review requests (API answers and live events share it) and API input shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework import serializers

from agentflow.core.api.serializers import PriorityField, StrictSerializer
from hitl.models import Decision, HITLRequest, Kind, Status
from hitl.non_answers import stored


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def request_json(request: HITLRequest) -> dict[str, Any]:
    """One queue item. Live events carry exactly this, so applying them equals a fetch."""
    assignee = request.assignee
    decided_by = request.decided_by
    non_answer = stored(request.context, request.proposed_answer)
    return {
        "id": str(request.pk),
        "run_id": str(request.run_id),
        "agent_id": request.context.get("agent_id"),
        "session_id": request.context.get("session_id"),
        "kind": request.kind,
        "status": request.status,
        "priority": request.priority,
        "question": request.question,
        "proposed_answer": request.proposed_answer or None,
        # A draft that is no answer (a hand-off, the escalation message, empty) cannot be
        # approved: edit or reject it.
        "approvable": non_answer is None,
        "non_answer": None if non_answer is None else non_answer.as_json(),
        "intent": request.intent,
        "confidence": request.confidence,
        "escalation_reason": request.escalation_reason,
        "sources": request.sources,
        "required_role": request.required_role,
        "escalation_level": request.escalation_level,
        "assignee": None
        if assignee is None
        else {"id": assignee.pk, "username": assignee.get_username()},
        "assigned_at": iso(request.assigned_at),
        "sla_deadline": iso(request.sla_deadline),
        "expires_at": iso(request.expires_at),
        "breached": request.breached_at is not None,
        "breached_at": iso(request.breached_at),
        "decision": request.decision or None,
        "response": request.response or None,
        "reason": request.reason or None,
        "decided_by": None
        if decided_by is None
        else {"id": decided_by.pk, "username": decided_by.get_username()},
        "decided_at": iso(request.decided_at),
        "created_at": iso(request.created_at),
    }


# --- input ----------------------------------------------------------------------------


class RespondSerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=Decision.values)
    response = serializers.CharField(
        required=False, allow_blank=True, max_length=20_000, trim_whitespace=False
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2_000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        decision = attrs["decision"]
        response = attrs.get("response")
        if decision == Decision.EDIT:
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


# --- output (documented in the OpenAPI schema) -------------------------------------------


class PersonSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class NonAnswerSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=[
            "empty",
            "dont_know",
            "escalation_message",
            "template_answer",
            "handoff_message",
            "hand_off",
        ]
    )
    detail = serializers.CharField()


class ReviewRequestSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    agent_id = serializers.CharField(allow_null=True)
    session_id = serializers.CharField(allow_null=True)
    kind = serializers.ChoiceField(choices=Kind.values)
    status = serializers.ChoiceField(choices=Status.values)
    priority = serializers.ChoiceField(choices=["low", "medium", "high", "critical"])
    question = serializers.CharField()
    proposed_answer = serializers.CharField(allow_null=True)
    approvable = serializers.BooleanField(
        help_text="False when the draft is no answer: approve answers 422 nothing_to_approve."
    )
    non_answer = NonAnswerSerializer(allow_null=True)
    intent = serializers.CharField(allow_blank=True)
    confidence = serializers.FloatField(allow_null=True)
    escalation_reason = serializers.CharField(allow_blank=True)
    sources = serializers.ListField(child=serializers.DictField())
    required_role = serializers.CharField()
    escalation_level = serializers.IntegerField()
    assignee = PersonSerializer(allow_null=True)
    assigned_at = serializers.CharField(allow_null=True)
    sla_deadline = serializers.CharField()
    expires_at = serializers.CharField(allow_null=True)
    breached = serializers.BooleanField()
    breached_at = serializers.CharField(allow_null=True)
    decision = serializers.ChoiceField(choices=Decision.values, allow_null=True)
    response = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    decided_by = PersonSerializer(allow_null=True)
    decided_at = serializers.CharField(allow_null=True)
    created_at = serializers.CharField()


class ActorSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField(allow_blank=True)


class HistoryEntrySerializer(serializers.Serializer):
    at = serializers.CharField()
    action = serializers.CharField()
    actor = ActorSerializer()
    detail = serializers.DictField()


class ReviewerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()
    available = serializers.BooleanField()
    capacity = serializers.IntegerField()
    open_assigned = serializers.IntegerField()


class StatsDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    queued = serializers.IntegerField()
    decided = serializers.IntegerField()
    median_seconds_to_decision = serializers.FloatField(allow_null=True)
    breached = serializers.IntegerField()
    breach_rate = serializers.FloatField(allow_null=True)


class OpenCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    assigned = serializers.IntegerField()
    escalated = serializers.IntegerField()
    breached = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    days = StatsDaySerializer(many=True)
    median_seconds_to_decision = serializers.FloatField(allow_null=True)
    breach_rate = serializers.FloatField(allow_null=True)
    open = OpenCountsSerializer()
