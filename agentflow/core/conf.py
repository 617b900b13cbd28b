"""Typed reads of the ``AGENTFLOW`` settings (see docs/configuration.md).

The settings dict mixes numbers, strings, lists and dicts, so type checkers see its values
as ``object``. Read a value through the accessor of its type: numbers and strings from the
environment are coerced as before, and a value of the wrong kind is a configuration error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def setting(name: str) -> object:
    return settings.AGENTFLOW[name]


def optional_setting(name: str) -> object:
    """The raw value, None when unset: for system checks that report what is missing."""
    return settings.AGENTFLOW.get(name)


def _number(name: str) -> int | float | str:
    value = setting(name)
    if not isinstance(value, int | float | str):
        raise ImproperlyConfigured(f'AGENTFLOW["{name}"] must be a number, not {value!r}')
    return value


def setting_int(name: str) -> int:
    return int(_number(name))


def setting_float(name: str) -> float:
    return float(_number(name))


def setting_str(name: str) -> str | None:
    value = setting(name)
    return None if value is None else str(value)


def setting_list(name: str) -> list[str]:
    value = setting(name)
    if not value:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ImproperlyConfigured(f'AGENTFLOW["{name}"] must be a list, not {value!r}')
    return [str(item) for item in value]


def setting_dict(name: str) -> dict[str, Any]:
    value = setting(name)
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f'AGENTFLOW["{name}"] must be a mapping, not {value!r}')
    return value
