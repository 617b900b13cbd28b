"""A form for a blueprint's config, built from the JSON schema the API publishes.

The top-level settings a person types (text, numbers, yes/no, one or several of a few
choices, a list of words) become ordinary fields with the schema's description as help and
its default as the initial value; everything nested (intent categories, LLM providers, a
planner, routing rules) stays in an "advanced" JSON box. What the form posts is one config
object, validated by the same service as the API, whose refusals name these fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django import forms

from frontend.forms import JSONObjectField

__all__ = ["ADVANCED", "ConfigForm", "add_config_errors", "config_form"]

ADVANCED = "advanced"  # the JSON box's field name


def _plain(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The property's own schema without ``null`` (Optional[...]); None if not one type."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    kept = [o for o in options if o.get("type") != "null"]
    return kept[0] if len(kept) == 1 else None


def _choices(values: list[Any]) -> list[tuple[str, str]]:
    return [(str(v), str(v)) for v in values]


def _array_field(item: Mapping[str, Any], common: dict[str, Any]) -> forms.Field | None:
    if "enum" in item:
        return forms.MultipleChoiceField(
            choices=_choices(item["enum"]), widget=forms.CheckboxSelectMultiple, **common
        )
    if item.get("type") == "string":
        common["help_text"] = f"{common.get('help_text', '')} One per line.".strip()
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), **common)
    return None


def _field(schema: Mapping[str, Any]) -> forms.Field | None:
    """A form field for a simple property; None for what belongs in the JSON box."""
    plain = _plain(schema)
    if plain is None or "$ref" in plain:
        return None
    common: dict[str, Any] = {"required": False, "help_text": schema.get("description", "")}
    kind = plain.get("type")
    if "enum" in plain:
        return forms.ChoiceField(choices=_choices(plain["enum"]), **common)
    if kind == "boolean":
        return forms.BooleanField(**common)
    if kind in ("integer", "number"):
        bounds = {
            "min_value": plain.get("minimum", plain.get("exclusiveMinimum")),
            "max_value": plain.get("maximum", plain.get("exclusiveMaximum")),
        }
        field_class = forms.IntegerField if kind == "integer" else forms.FloatField
        return field_class(**common, **{k: v for k, v in bounds.items() if v is not None})
    if kind == "string":
        return forms.CharField(max_length=plain.get("maxLength"), **common)
    if kind == "array":
        return _array_field(plain.get("items") or {}, common)
    return None


class ConfigForm(forms.Form):
    """Name, the blueprint's simple settings, and the advanced JSON box."""

    name = forms.CharField(max_length=200)
    simple: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = {}

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("A name is required.")
        return name

    def config(self) -> dict[str, Any]:
        """The config to create the agent with: the advanced JSON, then the simple fields."""
        config = dict(self.cleaned_data.get(ADVANCED) or {})
        for key in self.simple:
            value = self.cleaned_data.get(key)
            if isinstance(self.fields[key].widget, forms.Textarea):
                value = [line.strip() for line in str(value or "").splitlines() if line.strip()]
            if value is None or value == "":
                continue  # left empty: the blueprint's default
            config[key] = value
        return config


def config_form(schema: Mapping[str, Any], defaults: Mapping[str, Any]) -> type[ConfigForm]:
    """The form class of one blueprint's config schema (see the module docstring)."""
    fields: dict[str, forms.Field] = {}
    advanced: dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        field = _field(prop)
        if field is None:
            advanced[key] = defaults.get(key)
            continue
        default = defaults.get(key)
        if isinstance(field.widget, forms.Textarea) and isinstance(default, list):
            default = "\n".join(str(v) for v in default)
        field.initial = default
        fields[key] = field
    fields[ADVANCED] = JSONObjectField(
        required=False,
        initial=json.dumps(advanced, indent=2) if advanced else None,
        help_text="The nested settings, as JSON (their defaults shown).",
    )
    attrs: dict[str, Any] = {**fields, "simple": tuple(k for k in fields if k != ADVANCED)}
    attrs["defaults"] = dict(defaults)
    return type("BlueprintConfigForm", (ConfigForm,), attrs)


def add_config_errors(form: ConfigForm, fields: Mapping[str, list[str]]) -> None:
    """The service's refusals on the field they name (nested paths: the JSON box)."""
    for path, reasons in fields.items():
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        target = top if top in form.simple or top == "name" else ADVANCED
        for reason in reasons:
            form.add_error(target, reason if target == path else f"{path}: {reason}")
