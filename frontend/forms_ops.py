"""Forms of the integration and review-configuration pages: the activity stream's filters,
the graph's search, event rules, escalation policies, review settings and availability.

They parse and check input as the API's serializers do; services decide the rest (their
refusals come back on the form through :func:`frontend.forms.add_service_errors`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.validators import validate_email

from frontend.forms import JSONObjectField
from hitl.models import ROLE_RANK, Kind, OnBreach, OnExpiry, OnReject, Priority
from learning.models import ActivitySource
from learning.rules import reply_url_allowed

PRIORITIES = [(p, p) for p in Priority.values]
MAX_LIST_ITEMS = 50


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class ActivityFilterForm(forms.Form):
    """The activity stream's filters, as ``GET /api/v1/activity`` reads them (and more)."""

    kind = forms.CharField(
        max_length=100, required=False, help_text="A kind, or a prefix ending in *: zendesk.*"
    )
    source = forms.ChoiceField(
        choices=[("", "any source"), *ActivitySource.choices], required=False
    )
    agent = forms.ChoiceField(choices=[("", "any agent")], required=False)
    since = forms.DateTimeField(required=False, help_text="UTC, e.g. 2026-01-31 09:00")
    until = forms.DateTimeField(required=False, help_text="UTC, before this moment")

    def __init__(self, *args: Any, agent_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agent = self.fields["agent"]
        assert isinstance(agent, forms.ChoiceField)
        agent.choices = [("", "any agent"), *agent_choices]

    def clean_kind(self) -> str:
        kind = str(self.cleaned_data.get("kind") or "").strip()
        if "*" in kind.removesuffix("*") or "\x00" in kind:
            raise forms.ValidationError("A kind, or a prefix ending in *.")
        return kind

    def clean_since(self) -> datetime | None:
        return _utc(self.cleaned_data.get("since"))

    def clean_until(self) -> datetime | None:
        return _utc(self.cleaned_data.get("until"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "Must be after 'since'.")
        return data


class CustomerSearchForm(forms.Form):
    q = forms.CharField(
        max_length=200,
        required=False,
        label="Customer",
        help_text="A user id or key, e.g. dana, u-42 or zendesk:user:123",
    )

    def clean_q(self) -> str:
        text = str(self.cleaned_data.get("q") or "").strip()
        if "\x00" in text:
            raise forms.ValidationError("Must not contain NUL characters.")
        return text


EVENT_KIND = re.compile(r"^[a-z0-9_.*?\[\]-]{1,100}$")


class RuleForm(forms.Form):
    """An event rule, as ``POST /api/v1/activity/rules`` takes it."""

    name = forms.CharField(max_length=200)
    event_kind = forms.RegexField(
        EVENT_KIND,
        max_length=100,
        help_text="The event kind, or a pattern: zendesk.ticket.*",
        error_messages={"invalid": "Lower-case letters, digits and . _ - * ? [ ] only."},
    )
    agent = forms.ChoiceField(help_text="The agent whose run answers the event.")
    conditions = JSONObjectField(
        required=False,
        help_text='Facts that must be equal, e.g. {"priority": "high", "tags": "billing"}.',
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "mono"}),
    )
    priority = forms.ChoiceField(choices=PRIORITIES, initial=Priority.MEDIUM)
    reply_url = forms.CharField(
        max_length=500,
        required=False,
        help_text="Where the answer is posted (under WEBHOOK_REPLY_ALLOWED_URLS); empty: none.",
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, agent_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agent = self.fields["agent"]
        assert isinstance(agent, forms.ChoiceField)
        agent.choices = agent_choices

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("A name is required.")
        return name

    def clean_conditions(self) -> dict[str, Any]:
        value: dict[str, Any] = self.cleaned_data.get("conditions") or {}
        if len(value) > 20:
            raise forms.ValidationError("At most 20 conditions.")
        for name, wanted in value.items():
            if not isinstance(wanted, str | bool | int | float):
                raise forms.ValidationError(f"{name}: a string, number or boolean.")
        return value

    def clean_reply_url(self) -> str:
        url = str(self.cleaned_data.get("reply_url") or "").strip()
        if url and not reply_url_allowed(url):
            raise forms.ValidationError(
                "Not under an allowed reply URL prefix (WEBHOOK_REPLY_ALLOWED_URLS)."
            )
        return url


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", text.strip()) if w]


class PolicyForm(forms.Form):
    """An escalation policy: which requests it takes, the role ladder, breach and expiry."""

    name = forms.CharField(max_length=100)
    position = forms.IntegerField(
        min_value=0, max_value=100_000, initial=100, help_text="Lower is tried first."
    )
    enabled = forms.BooleanField(required=False, initial=True)
    priorities = forms.MultipleChoiceField(
        choices=PRIORITIES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every priority.",
    )
    kinds = forms.MultipleChoiceField(
        choices=Kind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every kind.",
    )
    intents = forms.CharField(
        max_length=2_000, required=False, help_text="Comma-separated; empty: every intent."
    )
    chain = forms.MultipleChoiceField(
        choices=[(role, role) for role in ROLE_RANK],
        widget=forms.CheckboxSelectMultiple,
        help_text="Who reviews first, then who each breach hands it up to.",
    )
    on_breach = forms.ChoiceField(choices=OnBreach.choices)
    escalation_minutes = forms.IntegerField(
        min_value=1,
        max_value=525_600,
        required=False,
        help_text="Minutes each higher level gets; empty: the priority's SLA again.",
    )
    expire_after_minutes = forms.IntegerField(
        min_value=1,
        max_value=525_600,
        required=False,
        help_text="Minutes after the first deadline at which it expires; empty: never.",
    )
    on_expiry = forms.ChoiceField(choices=OnExpiry.choices)
    notify_on_queue = forms.BooleanField(required=False)
    notify_email = forms.BooleanField(required=False, initial=True)
    notify_slack = forms.BooleanField(required=False, initial=True)
    extra_emails = forms.CharField(
        max_length=5_000, required=False, help_text="Also e-mailed on a breach; comma-separated."
    )

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("A name is required.")
        return name

    def clean_intents(self) -> list[str]:
        intents = _words(self.cleaned_data.get("intents") or "")
        if len(intents) > MAX_LIST_ITEMS or any(len(i) > 100 for i in intents):
            raise forms.ValidationError(f"At most {MAX_LIST_ITEMS} intents of 100 characters.")
        return intents

    def clean_chain(self) -> list[str]:
        # Ticked boxes have no order: the ladder climbs by rank (the model checks it does).
        return sorted(self.cleaned_data["chain"], key=lambda role: ROLE_RANK[role])

    def clean_extra_emails(self) -> list[str]:
        emails = _words(self.cleaned_data.get("extra_emails") or "")
        if len(emails) > MAX_LIST_ITEMS:
            raise forms.ValidationError(f"At most {MAX_LIST_ITEMS} addresses.")
        for email in emails:
            try:
                validate_email(email)
            except forms.ValidationError:
                raise forms.ValidationError(f"{email!r} is not an e-mail address.") from None
        return emails


class ReviewSettingsForm(forms.Form):
    """SLA minutes per priority, the hand-off message and what a rejection does, for the
    tenant (``agent`` empty) or one agent (its settings win over the tenant's)."""

    agent = forms.ChoiceField(choices=[("", "the whole tenant")], required=False)
    handoff_message = forms.CharField(
        max_length=2_000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What a rejected request delivers; {reason} is the reviewer's reason. "
        "Empty: the default.",
    )
    on_reject = forms.ChoiceField(
        choices=[("", "default (hand-off message)"), *OnReject.choices], required=False
    )

    def __init__(self, *args: Any, agent_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        agent = self.fields["agent"]
        assert isinstance(agent, forms.ChoiceField)
        agent.choices = [("", "the whole tenant"), *agent_choices]
        for priority in Priority.values:  # one field per priority, after the agent
            self.fields[f"sla_{priority}"] = forms.IntegerField(
                min_value=1,
                max_value=525_600,
                required=False,
                label=f"SLA minutes, {priority}",
            )

    def sla_minutes(self) -> dict[str, int]:
        return {
            priority: int(self.cleaned_data[f"sla_{priority}"])
            for priority in Priority.values
            if self.cleaned_data.get(f"sla_{priority}") is not None
        }


class AvailabilityForm(forms.Form):
    user_id = forms.IntegerField(min_value=1, widget=forms.HiddenInput)
    available = forms.TypedChoiceField(
        choices=[("1", "available"), ("0", "away")], coerce=lambda v: v == "1"
    )
    capacity = forms.IntegerField(
        min_value=1, max_value=1000, required=False, help_text="Requests held at once."
    )
