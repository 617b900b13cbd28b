"""Small display filters of the dashboard (the live JS formats the same way: pages.js)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

register = template.Library()


@register.filter
def percent(value: Any) -> str:
    """0.1234 -> '12.3%'; None (nothing to divide by) -> '—'."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.1f}%"


@register.filter
def money(value: Any) -> str:
    """Dollars with 4 decimals: small LLM costs stay visible."""
    try:
        return f"{Decimal(str(value)):.4f}"
    except (InvalidOperation, ValueError):
        return str(value)


@register.filter
def quota_label(name: str) -> str:
    return str(name).replace("_", " ").capitalize()


@register.filter
def get(mapping: Any, key: Any) -> Any:
    """``mapping|get:key`` for dicts in templates: the key as given, else as a string
    (ids keyed by int, e.g. tenant roles, and by str, e.g. agent names, both work)."""
    try:
        if key in mapping:
            return mapping[key]
        return mapping.get(str(key), "")
    except (AttributeError, TypeError):
        return ""


@register.filter
def ms(value: Any) -> str:
    try:
        return f"{float(value):.1f} ms"
    except (TypeError, ValueError):
        return "—"
