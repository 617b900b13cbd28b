"""Serializer building blocks of the API contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

PRIORITIES = ["low", "medium", "high", "critical"]
DEPRECATED_PRIORITY_ALIASES = {"normal": "medium"}


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Rejects fields it does not know: a typo must not be silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class PriorityField(serializers.ChoiceField):
    """``low|medium|high|critical``; ``normal`` still works as ``medium``, flagged deprecated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=PRIORITIES, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and data in DEPRECATED_PRIORITY_ALIASES:
            request = self.context.get("request")
            if request is not None:
                deprecations = getattr(request, "deprecations", [])
                deprecations.append(
                    f'priority "{data}" is deprecated; use "{DEPRECATED_PRIORITY_ALIASES[data]}"'
                )
                request.deprecations = deprecations
            data = DEPRECATED_PRIORITY_ALIASES[data]
        return super().to_internal_value(data)
