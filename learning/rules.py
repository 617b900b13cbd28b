"""Tenant rules: external events that start agent runs (SPEC 10), and replies to the source.

A rule matches an event when ``fnmatch(event.kind, rule.event_kind)`` and each condition
equals the event's fact of that name (for a list fact such as ``tags``: is one of them).
Only external events (webhooks) fire rules: internal events (a run completing) never
start runs, so rules cannot loop; messages posted by bots (our own Slack replies) neither.

The event's text is untrusted: it becomes the run's message fenced by
:func:`agentflow.kernel.guardrails.wrap_untrusted` (labelled as data, instruction-like
phrases neutralised), the kernel redacts PII from it before any LLM call, and nothing in
it chooses the agent, the priority or where a reply goes: the rule does.
"""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

import structlog
from django.db import transaction

from agentflow.core.api.exceptions import ContractError
from agentflow.core.conf import setting_int, setting_list
from agentflow.kernel.guardrails import wrap_untrusted
from governance.audit import Actor
from learning.models import ActivityEvent, ActivitySource, EventRule
from learning.webhooks.payloads import Facts

log = structlog.get_logger(__name__)

RULE_ACTOR = Actor.system("event-rule")


def matches(rule: EventRule, kind: str, fields: dict[str, Any]) -> bool:
    if not fnmatch.fnmatchcase(kind, rule.event_kind):
        return False
    for name, wanted in (rule.conditions or {}).items():
        have = fields.get(name)
        if isinstance(have, list):
            if wanted not in have:
                return False
        elif have != wanted:
            return False
    return True


def reply_url_allowed(url: str) -> bool:
    """Replies only go to URLs under an operator-configured prefix (no SSRF through rules)."""
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.netloc or parts.username:
        return False
    return any(url.startswith(prefix) for prefix in setting_list("WEBHOOK_REPLY_ALLOWED_URLS"))


def _label(event: ActivityEvent, facts: Facts) -> str:
    ticket = facts.ticket.key if facts.ticket else event.kind
    return f"{event.source} webhook {ticket}"


def fire(event: ActivityEvent, facts: Facts) -> list[dict[str, Any]]:
    """Start one run per matching enabled rule (in the caller's transaction); the outcomes."""
    from agentflow.services import RunRequest, start_run  # noqa: PLC0415 - left: back edge (a rule starts a run)

    if event.source == ActivitySource.INTERNAL or facts.from_bot:
        return []
    fields = facts.fields()
    outcomes: list[dict[str, Any]] = []
    for rule in EventRule.objects.filter(enabled=True).select_related("agent"):
        if not matches(rule, event.kind, fields):
            continue
        outcome: dict[str, Any] = {"rule_id": str(rule.pk), "rule": rule.name}
        if not facts.text:
            outcomes.append({**outcome, "skipped": "no_text"})
            continue
        limit = setting_int("WEBHOOK_MESSAGE_MAX_CHARS")
        customer_key = facts.customer.key if facts.customer else f"{event.source}:anonymous"
        metadata: dict[str, Any] = {
            "activity_event_id": str(event.pk),
            "rule_id": str(rule.pk),
            "source": event.source,
            "customer_key": customer_key,
        }
        if facts.ticket:
            metadata["ticket_key"] = facts.ticket.key
            metadata["ticket_label"] = facts.ticket.label
        if rule.reply_url:
            metadata["reply"] = facts.reply
        request = RunRequest(
            user_id=customer_key[:200],
            message=wrap_untrusted(facts.text, _label(event, facts), max_chars=limit),
            priority=rule.priority,
            metadata=metadata,
        )
        try:
            with transaction.atomic():
                run = start_run(actor=RULE_ACTOR, agent=rule.agent, request=request)
        except ContractError as exc:  # quota or budget: recorded, not retried forever
            log.warning("rules.run_refused", rule_id=str(rule.pk), error=exc.error_type)
            outcomes.append({**outcome, "skipped": exc.error_type})
            continue
        outcomes.append({**outcome, "run_id": str(run.pk), "agent_id": str(rule.agent_id)})
    return outcomes
