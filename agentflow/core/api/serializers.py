"""Serializer building blocks of the API contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

PRIORITIES = ["low", "medium", "high", "critical"]
DEPRECATED_PRIORITY_ALIASES = {"normal": "medium"}


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True  # PostgreSQL text and JSONB cannot hold NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (e.g. "\ud800") from JSON escapes
        return True
    return False


def unstorable_text(value: Any, path: str) -> str | None:
    """The path of the first string (or key) PostgreSQL cannot store, or None."""
    if isinstance(value, str):
        return path if _bad_text(value) else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _bad_text(key):
                return f"{path} (a key)"
            if (found := unstorable_text(item, f"{path}.{key}")) is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := unstorable_text(item, f"{path}[{index}]")) is not None:
                return found
    return None


class StrictSerializer(serializers.Serializer):
    """Rejects unknown fields and non-string text: a typo or a type mix-up must not pass.

    DRF's CharField turns ``42`` into ``"42"``; a client sending a number where the schema
    says string has a bug we should report, not hide.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            errors: dict[str, list[str]] = {
                name: ["Unknown field."] for name in sorted(set(data) - writable)
            }
            for name, field in self.fields.items():
                text_field = isinstance(field, serializers.CharField | serializers.ChoiceField)
                value = data.get(name)
                if text_field and value is not None and not isinstance(value, str):
                    errors[name] = [f"Must be a string, not {type(value).__name__}."]
                elif (where := unstorable_text(value, name)) is not None:
                    errors[name] = [f"{where}: contains a NUL character or invalid Unicode."]
            if errors:
                raise serializers.ValidationError(errors)
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


class StrictIntegerField(serializers.IntegerField):
    """An integer as JSON writes it: "5", 5.0 and true are refused instead of coerced."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


# --- output fields: the response bytes exactly as the models hold them ---------------------


def iso(value: Any) -> str | None:
    """A timestamp as the API writes it: ISO 8601 with ``Z`` for UTC."""
    return value.isoformat().replace("+00:00", "Z") if value else None


class IsoDateTimeField(serializers.CharField):
    """A timestamp written by :func:`iso` (documented as a string, as it always was)."""

    def to_representation(self, value: Any) -> Any:
        # Never None here: DRF writes None itself without asking the field.
        return iso(value)


class AsIs:
    """Writes the attribute unchanged: a ``FloatField`` holding ``1`` still answers ``1``.

    Mixed into DRF fields so the schema keeps their type while the bytes stay those the
    API always sent (DRF's own fields would coerce ints to floats, copy dicts, ...).
    """

    def to_representation(self, value: Any) -> Any:
        return value


class AsIsFloatField(AsIs, serializers.FloatField):
    pass


class AsIsIntegerField(AsIs, serializers.IntegerField):
    pass


class AsIsDictField(AsIs, serializers.DictField):
    pass


class AsIsListField(AsIs, serializers.ListField):
    pass


class AsIsCharField(AsIs, serializers.CharField):
    pass


class AsIsBooleanField(AsIs, serializers.BooleanField):
    pass


class AsIsChoiceField(AsIs, serializers.ChoiceField):
    pass


class ZDateTimeField(serializers.DateTimeField):
    """Like :class:`IsoDateTimeField`, documented as ``format: date-time``."""

    def to_representation(self, value: Any) -> Any:
        return iso(value)


_SHARED: dict[tuple[type[serializers.Serializer], bool | None], serializers.Serializer] = {}


def represent(
    serializer_class: type[serializers.Serializer],
    instance: Any,
    *,
    include_result: bool | None = None,
) -> dict[str, Any]:
    """``serializer_class(instance).data`` through one instance per class (and context).

    DRF deep-copies a serializer's declared fields for every new instance (0.1-0.5 ms each),
    and runs, results and review requests are shown on every 202, settlement and live event
    (issue 15). The fields are read-only once built, so every thread shares the instance.
    ``include_result`` is the context flag of the run shapes (None: no context).
    """
    key = (serializer_class, include_result)
    shape = _SHARED.get(key)
    if shape is None:
        context = {} if include_result is None else {"include_result": include_result}
        shape = serializer_class(context=context)
        shape.fields  # noqa: B018 - built here, before it is shared
        _SHARED[key] = shape
    return dict(shape.to_representation(instance))
