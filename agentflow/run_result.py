"""What a settled run answered: the one shape stored in ``Run.result`` and shown by the API."""

from __future__ import annotations

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


@extend_schema_field(RunResultSerializer)
class StoredResultField(AsIs, serializers.JSONField):
    """``Run.result`` as stored (a reviewer's edit may have changed it since)."""


def reply_result(reply: Any) -> dict[str, Any]:
    """The stored result of a pipeline reply: the fields of :class:`RunResultSerializer`."""
    return dict(RunResultSerializer(reply.to_dict()).data)
