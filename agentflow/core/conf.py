"""Typed reads of the ``AGENTFLOW`` settings (see docs/configuration.md).

The settings dict mixes numbers, strings, lists and dicts, so type checkers see its values
as ``object``. Read a value through the accessor of its type: numbers and strings from the
environment are coerced as before, and a value of the wrong kind is a configuration error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
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


def site_url() -> str:
    """Where ``make run`` serves: the running one's address (its runtime file), else the
    ``HOST``/``PORT`` it would use. Management commands print links with it."""
    try:
        runtime = json.loads(Path(settings.RUNTIME_FILE).read_text(encoding="utf-8"))
        return str(runtime["url"])
    except (OSError, ValueError, KeyError, TypeError):
        host = os.environ.get("HOST", "127.0.0.1")
        return f"http://{host}:{os.environ.get('PORT', '8000')}"
