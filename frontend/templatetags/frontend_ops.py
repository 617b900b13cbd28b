"""Display filters of the integration pages: a JSON payload as nested labelled fields."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
MAX_DEPTH = 6  # deeper than this is shown as JSON text: a payload can nest without end


def _label(key: Any) -> str:
    return str(key).replace("_", " ").replace(".", " ").capitalize()


def _scalar(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _tree(value: Any, depth: int) -> SafeString:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return format_html('<code class="small">{}</code>', json.dumps(value, default=str))
    if isinstance(value, dict):
        if not value:
            return mark_safe('<span class="muted">—</span>')
        items = format_html_join(
            "",
            '<dt>{}</dt><dd data-key="{}">{}</dd>',
            ((_label(k), k, _tree(v, depth + 1)) for k, v in value.items()),
        )
        return format_html('<dl class="kv">{}</dl>', items)
    if isinstance(value, list):
        if not value:
            return mark_safe('<span class="muted">—</span>')
        if not any(isinstance(v, dict | list) for v in value):
            return format_html("{}", ", ".join(_scalar(v) for v in value))
        items = format_html_join("", "<li>{}</li>", ((_tree(v, depth + 1),) for v in value))
        return format_html('<ol class="kv-list">{}</ol>', items)
    return format_html("{}", _scalar(value))


@register.filter
def tree(value: Any) -> SafeString:
    """A JSON value as labelled fields, nested objects as nested fields, never a repr."""
    return _tree(value, 0)


@register.filter
def step_label(step: Any) -> str:
    """A journey's edge kind as a person says it."""
    return {
        "opened": "opened by",
        "followed_up": "followed up by",
        "handled": "handled by",
        "resolved_by": "resolved by",
        "cites": "cites",
    }.get(str(step), str(step).replace("_", " "))
