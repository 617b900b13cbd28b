"""The dashboard's forms: they parse and check input; the apps' services decide the rest.

A service's refusal (a config its blueprint rejects, a duplicate name, a quota) is put
back on the form with :func:`add_service_errors`, so every bad input is shown on the page
it came from and nothing is changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django import forms

from agentflow.api.serializers import MESSAGE_MAX_CHARS
from agentflow.core.api.parsers import loads_bounded
from agentflow.models import RunStatus
from agentflow.pipelines import BLUEPRINTS
from governance import invitations as invitation_rules
from learning.models import WebhookProvider
from learning.webhooks import services as webhook_services
from tenants.models import Role
from tenants.quotas import Tier
from tenants.services import ALL_SCOPES

MAX_CONFIG_CHARS = 200_000


class JSONObjectField(forms.CharField):
    """A JSON object typed into a textarea."""

    widget = forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", MAX_CONFIG_CHARS)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value, indent=2, sort_keys=True)
        return value

    def clean(self, value: Any) -> dict[str, Any]:
        text = super().clean(value)
        if not text or not str(text).strip():
            return {}
        try:
            data = loads_bounded(text)  # a ValueError past MAX_JSON_DEPTH, not a RecursionError
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise forms.ValidationError("Must be a JSON object ({...}).")
        return data


def add_service_errors(form: forms.Form, fields: dict[str, list[str]]) -> None:
    """Put a service's per-field reasons on the form (unknown field paths: the form's own)."""
    for name, reasons in fields.items():
        target = name if name in form.fields else None
        for reason in reasons:
            message = reason if target else f"{name}: {reason}"
            form.add_error(target or _fallback_field(form), message)


def _fallback_field(form: forms.Form) -> str | None:
    return "config" if "config" in form.fields else None


class AgentCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    blueprint = forms.ChoiceField(choices=[(name, name) for name in BLUEPRINTS])
    config = JSONObjectField(required=False, help_text="Empty: the blueprint's defaults.")

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("A name is required.")
        return name


class AgentEditForm(forms.Form):
    name = forms.CharField(max_length=200)
    config = JSONObjectField()

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("A name is required.")
        return name


class WebhookCreateForm(forms.Form):
    """A webhook endpoint, as ``POST /api/v1/webhooks/endpoints`` takes it."""

    provider = forms.ChoiceField(choices=WebhookProvider.choices)
    name = forms.CharField(max_length=200, required=False)
    secret = forms.CharField(
        required=False,
        min_length=webhook_services.MIN_SECRET_CHARS,
        max_length=webhook_services.MAX_SECRET_CHARS,
        help_text="The provider's signing secret (e.g. Slack's); leave empty to have one made.",
        widget=forms.PasswordInput(render_value=False),
    )

    def clean_secret(self) -> str:
        secret: str = self.cleaned_data.get("secret") or ""
        if secret:
            try:
                webhook_services.validate_secret(secret)
            except webhook_services.InvalidSecret as exc:
                raise forms.ValidationError(str(exc)) from exc
        return secret


class WebhookRotateForm(forms.Form):
    overlap_seconds = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=webhook_services.MAX_OVERLAP_SECONDS,
        help_text="How long the current secret keeps verifying (empty: the default, 24 h).",
    )


class RoleChangeForm(forms.Form):
    """A member's role and agent restriction, as ``POST /api/v1/governance/roles`` takes it."""

    username = forms.CharField(max_length=150, widget=forms.HiddenInput)
    role = forms.ChoiceField(choices=Role.choices)
    agents = forms.MultipleChoiceField(
        required=False,
        help_text="Restrict the member to these agents; none selected: every agent.",
    )

    def __init__(self, *args: Any, agent_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agents = self.fields["agents"]
        assert isinstance(agents, forms.MultipleChoiceField)
        agents.choices = agent_choices  # the agents the person managing may see


class InviteForm(forms.Form):
    """An invitation, as ``POST /api/v1/governance/invitations`` takes it."""

    email = forms.EmailField(required=False, max_length=254)
    username = forms.CharField(required=False, max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=invitation_rules.MAX_DAYS, initial=invitation_rules.DEFAULT_DAYS
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if bool(data.get("email")) == bool(data.get("username")) and not self.errors:
            self.add_error("email", "Give either an e-mail address or a username.")
        return data


class PlaygroundForm(forms.Form):
    """A message to try an agent with (the API's own limit on a message's length)."""

    message = forms.CharField(
        max_length=MESSAGE_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Ask what a customer would ask"}),
    )


class KnowledgeUploadForm(forms.Form):
    title = forms.CharField(max_length=300, required=False)
    file = forms.FileField(required=False, help_text="UTF-8 text or Markdown.")
    content = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 6}), strip=False)
    content_type = forms.ChoiceField(
        choices=[("text/markdown", "Markdown"), ("text/plain", "Plain text")],
        initial="text/markdown",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("file")
        if upload is not None:
            raw = upload.read()
            try:
                data["text"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("file", "The file is not UTF-8 text.")
                return data
            data["title"] = (data.get("title") or "").strip() or upload.name
        elif (data.get("content") or "").strip():
            data["text"] = data["content"]
        else:
            self.add_error("content", "Upload a file or paste the document's text.")
        return data


class DecisionForm(forms.Form):
    """Edit carries the new answer (an action request's: its call's arguments, as JSON),
    reject its reason; the HITL service and the tool's input schema check the rest."""

    response = forms.CharField(required=False, strip=False, max_length=20_000)
    arguments = forms.CharField(required=False, strip=False, max_length=100_000)
    reason = forms.CharField(required=False, max_length=2_000)


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in ALL_SCOPES], widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: Any, allowed_scopes: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["scopes"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(scope, scope) for scope in allowed_scopes]
        field.initial = [scope for scope in allowed_scopes if scope != "admin"]


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=80, required=False)
    tier = forms.ChoiceField(choices=Tier.CHOICES, initial=Tier.FREE)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(
        choices=[("", "any status"), *((s, s) for s in RunStatus.values)], required=False
    )
    agent = forms.UUIDField(required=False)
    since = forms.DateTimeField(required=False, help_text="UTC, e.g. 2026-01-31 09:00")

    def clean_since(self) -> datetime | None:
        return _utc(self.cleaned_data.get("since"))


class AuditFilterForm(forms.Form):
    action = forms.CharField(max_length=100, required=False, help_text="exact, or prefix*")
    actor = forms.CharField(max_length=100, required=False, help_text="user id or key prefix")
    target = forms.CharField(max_length=100, required=False, help_text="target id or type")
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)

    def clean_since(self) -> datetime | None:
        return _utc(self.cleaned_data.get("since"))

    def clean_until(self) -> datetime | None:
        return _utc(self.cleaned_data.get("until"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in ("action", "actor", "target"):
            if "\x00" in (data.get(name) or ""):
                self.add_error(name, "Must not contain NUL characters.")
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "Must be after 'since'.")
        return data
