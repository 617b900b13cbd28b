"""Tenant rules: external events that start agent runs (SPEC 10), and replies to the source.

This module says which rules match an event and where replies may go; the stream's
consumer (:func:`learning.processing.fire_rules`) starts the runs.

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

from agentflow.core.conf import setting_list
from governance.audit import Actor
from learning.models import ActivityEvent, EventRule
from learning.webhooks.payloads import Facts

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


def label(event: ActivityEvent, facts: Facts) -> str:
    """What the event's untrusted text is labelled as when fenced into a run's message."""
    ticket = facts.ticket.key if facts.ticket else event.kind
    return f"{event.source} webhook {ticket}"
