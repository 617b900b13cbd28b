"""What a settled run answered: the one shape stored in ``Run.result`` and shown by the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agentflow.core.api.serializers import (
    AsIs,
    AsIsBooleanField,
    AsIsCharField,
    AsIsDictField,
    AsIsFloatField,
    AsIsListField,
    represent,
)


class RunResultSerializer(serializers.Serializer):
    """What a settled run answered (stored in ``Run.result``; see ``reply_result``)."""

    content = AsIsCharField()
    intent = AsIsCharField()
    confidence = AsIsFloatField()
    escalated = AsIsBooleanField()
    escalation_reason = AsIsCharField(allow_null=True)
    proposed_answer = AsIsCharField(allow_null=True)
    thread_id = AsIsCharField()
    transition = AsIsCharField()
    sources = AsIsListField(child=serializers.DictField(), default=list)
    metadata = AsIsDictField(default=dict)
    plan_path = AsIsListField(
        child=serializers.DictField(),
        default=list,
        help_text="The planner's steps for this message, in order (GET /runs/{id}/steps).",
    )


@extend_schema_field(RunResultSerializer)
class StoredResultField(AsIs, serializers.JSONField):
    """``Run.result`` as stored (a reviewer's edit may have changed it since)."""


def reply_result(reply: Any) -> dict[str, Any]:
    """The stored result of a pipeline reply: the fields of :class:`RunResultSerializer`."""
    return represent(RunResultSerializer, reply.to_dict())


def plan_steps(result: dict[str, Any] | None, started_at: datetime | None) -> list[dict[str, Any]]:
    """The planner's path of a run's ``result``, each step placed in time.

    The kernel records offsets from the start of the message's processing; the run's
    ``started_at`` (when the worker picked it up) anchors them. Empty until the run settled.
    """
    steps = []
    for index, step in enumerate((result or {}).get("plan_path") or []):
        started = finished = None
        if started_at is not None:
            started = started_at + timedelta(milliseconds=float(step.get("started_ms") or 0))
            finished = started + timedelta(milliseconds=float(step.get("duration_ms") or 0))
        steps.append(
            {
                **{key: step.get(key) for key in _PLAN_STEP_FIELDS},
                "index": index,
                "started_at": started,
                "finished_at": finished,
            }
        )
    return steps


_PLAN_STEP_FIELDS = (
    "node",
    "action",
    "outcome",
    "duration_ms",
    "tokens",
    "cost_usd",
    "transition",
    "via",
    "condition",
    "error",
)
