"""Typed reads of the learning app's ``AGENTFLOW`` settings (see docs/configuration.md)."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings


def _value(name: str) -> Any:
    return cast(dict[str, Any], settings.AGENTFLOW)[name]


def setting_int(name: str) -> int:
    return int(_value(name))


def setting_float(name: str) -> float:
    return float(_value(name))


def setting_list(name: str) -> list[str]:
    return [str(item) for item in _value(name) or []]


def setting_str(name: str) -> str | None:
    value = _value(name)
    return None if value is None else str(value)
