"""Small display filters of the dashboard (the live JS formats the same way: pages.js)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
CENT = Decimal("0.01")


@register.filter
def percent(value: Any) -> str:
    """0.1234 -> '12.3%'; None (nothing to divide by) -> '—'."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.1f}%"


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


@register.filter
def money(value: Any) -> str:
    """Dollars to the cent with the currency: '$1.23'; a cost below a cent (one cheap model
    call) says so rather than rounding to '$0.00'."""
    amount = _decimal(value)
    if amount is None:
        return str(value)
    if 0 < amount < CENT:
        return "< $0.01"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"


@register.filter
def cost(value: Any, offline: Any = False) -> SafeString:
    """``money``, with the exact amount on hover; 'offline provider: free' for a zero cost
    of an agent whose every provider is the offline one (it calls no paid model)."""
    amount = _decimal(value)
    if offline and (amount is None or amount == 0):
        return mark_safe('<span class="free" data-free="offline">offline provider: free</span>')
    return format_html('<span title="{} USD">{}</span>', value, money(value))


@register.filter
def when(value: Any) -> SafeString:
    """A moment as ``<time datetime=ISO>``: UTC until pages.js shows it in the viewer's
    time zone with a relative hint ("3 min ago")."""
    if not value:
        return mark_safe('<time class="when">—</time>')
    if isinstance(value, datetime):
        iso = value.isoformat().replace("+00:00", "Z")
        text = value.strftime("%Y-%m-%d %H:%M UTC")
    else:
        iso = str(value)
        text = iso.replace("T", " ")[:16] + " UTC"
    return format_html('<time class="when" datetime="{}" title="{}">{}</time>', iso, iso, text)


def _label(key: Any) -> str:
    return str(key).replace("_", " ").capitalize()


def _value(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


@register.filter
def fields(mapping: Any) -> SafeString:
    """A detail dict as labelled fields (``<dl>``), never a Python repr."""
    if not isinstance(mapping, dict):
        return format_html("{}", _value(mapping) if mapping else "—")
    if not mapping:
        return mark_safe('<span class="muted">—</span>')
    items = format_html_join(
        "",
        '<dt>{}</dt><dd data-key="{}">{}</dd>',
        ((_label(k), k, _value(v)) for k, v in mapping.items()),
    )
    return format_html('<dl class="kv">{}</dl>', items)


@register.filter
def actor(event: Any, names: Any) -> str:
    """Who did it, by name: a user's username, an API key by prefix, the system by role."""
    kind = str(getattr(event, "actor_type", "") or "")
    ident = str(getattr(event, "actor_id", "") or "")
    if kind == "user":
        name = names.get(ident) if isinstance(names, dict) else None
        return str(name) if name else f"user #{ident} (deleted)" if ident else "a user"
    if kind == "api_key":
        return f"API key {ident}…" if ident else "an API key"
    if kind == "system":
        return "system" if ident in ("", "system") else f"system ({ident})"
    return f"{kind} {ident}".strip()


@register.filter
def label(name: Any) -> str:
    """'golden_path' -> 'Golden path'."""
    return _label(name)


quota_label = register.filter("quota_label", label)


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
