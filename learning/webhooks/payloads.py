"""What a provider's payload says, in one shape: :class:`Facts` (used by rules and the graph).

Payloads are untrusted: every field is optional, type-checked and length-bounded here, and
nothing in them picks an agent, a priority or a URL (rules do). E-mail addresses never
become graph keys or labels: a customer known only by e-mail gets a hashed key.

Shapes understood (docs/api.md, "Webhooks"):
* Zendesk event webhooks (``type: zen:event-type:ticket.*``, ``detail``) and trigger
  webhooks with a ``ticket`` object;
* Slack Events API (``event_callback``), slash commands;
* Jira issue and comment webhooks (``webhookEvent``, ``issue.fields``), ADF descriptions;
* generic: ``{type, customer: {id, name, email}, ticket: {id, subject, category, status},
  text, resolution: {id?, summary, articles: [{id, title}]}}`` (a resolution ``id`` names a
  known fix several tickets share).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

TEXT_LIMIT = 20_000
LABEL_LIMIT = 200
RESOLVED_STATUSES = frozenset({"solved", "closed", "resolved", "done"})
_SLACK_MENTION = re.compile(r"<@([A-Z0-9]+)>")


@dataclass(frozen=True)
class Ref:
    key: str
    label: str = ""
    category: str = ""


@dataclass
class Facts:
    customer: Ref | None = None
    ticket: Ref | None = None
    text: str = ""
    status: str = ""
    priority: str = ""
    resolved: bool = False
    resolution: str = ""
    resolution_key: str = ""  # a shared resolution (macro, known fix) several tickets reuse
    articles: list[Ref] = field(default_factory=list)
    mentions_bot: bool = False
    from_bot: bool = False
    tags: list[str] = field(default_factory=list)
    reply: dict[str, str] = field(default_factory=dict)  # where an answer would go (Slack)

    def fields(self) -> dict[str, Any]:
        """The flat view rule conditions compare against."""
        return {
            "status": self.status,
            "priority": self.priority,
            "category": self.ticket.category if self.ticket else "",
            "resolved": self.resolved,
            "mentions_bot": self.mentions_bot,
            "from_bot": self.from_bot,
            "tags": self.tags,
            "has_text": bool(self.text),
        }


def _str(value: Any, limit: int = LABEL_LIMIT) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float | str):
        return str(value).strip()[:limit]
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return []
    return [tag for tag in (_str(item, 100).lower() for item in value[:50]) if tag]


def email_key(email: str) -> str:
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def customer(provider: str, ident: Any, name: Any = None, email: Any = None) -> Ref | None:
    ident_text, email_text = _str(ident), _str(email)
    if ident_text:
        return Ref(f"{provider}:user:{ident_text}", _str(name))
    if email_text:
        return Ref(email_key(email_text), _str(name))
    return None


def adf_text(node: Any) -> str:
    """Plain text of an Atlassian Document Format tree (Jira Cloud descriptions)."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "".join(adf_text(child) for child in node)
    if not isinstance(node, dict):
        return ""
    text = node.get("text") if node.get("type") == "text" else ""
    inner = adf_text(node.get("content") or [])
    block = node.get("type") in {"paragraph", "heading", "listItem", "codeBlock"}
    return f"{text or ''}{inner}" + ("\n" if block else "")


def _join(*parts: str) -> str:
    return "\n\n".join(part.strip() for part in parts if part and part.strip())[:TEXT_LIMIT]


def zendesk(kind: str, payload: dict[str, Any]) -> Facts:
    detail = _dict(payload.get("detail")) or _dict(payload.get("ticket")) or payload
    event = _dict(payload.get("event"))
    requester = _dict(detail.get("requester"))
    status = (_str(event.get("current")) or _str(detail.get("status"))).lower()
    tags = _tags(detail.get("tags"))
    category = _str(detail.get("category"), 100) or (tags[0] if tags else "")
    category = category or _str(detail.get("type"), 100).lower()
    ticket_id = _str(detail.get("id"))
    subject = _str(detail.get("subject") or detail.get("title"))
    return Facts(
        customer=customer(
            "zendesk",
            detail.get("requester_id") or requester.get("id"),
            requester.get("name"),
            requester.get("email"),
        ),
        ticket=Ref(f"zendesk:ticket:{ticket_id}", subject, category) if ticket_id else None,
        text=_join(subject, _str(detail.get("description"), TEXT_LIMIT)),
        status=status,
        priority=_str(detail.get("priority")).lower(),
        resolved=status in RESOLVED_STATUSES,
        resolution=_str(detail.get("resolution") or event.get("comment"), TEXT_LIMIT),
        tags=tags,
    )


def slack(kind: str, payload: dict[str, Any]) -> Facts:
    if "command" in payload:  # slash command (form fields)
        team = _str(payload.get("team_id"))
        text = _str(payload.get("text"), TEXT_LIMIT)
        return Facts(
            customer=customer("slack", f"{team}:{_str(payload.get('user_id'))}"),
            text=text,
            mentions_bot=True,  # addressed to the app by definition
            reply={"response_url": _str(payload.get("response_url"), 500)},
        )
    event = _dict(payload.get("event"))
    team = _str(payload.get("team_id"))
    channel, ts = _str(event.get("channel")), _str(event.get("ts"))
    thread = _str(event.get("thread_ts")) or ts
    bots = {_str(_dict(a).get("user_id")) for a in payload.get("authorizations") or [] if _dict(a)}
    raw = _str(event.get("text"), TEXT_LIMIT)
    mentioned = set(_SLACK_MENTION.findall(raw))
    text = _SLACK_MENTION.sub("", raw).strip() if kind == "slack.app_mention" else raw
    user = _str(event.get("user"))
    return Facts(
        customer=customer("slack", f"{team}:{user}") if user else None,
        ticket=Ref(f"slack:thread:{team}:{channel}:{thread}", text[:80]) if channel else None,
        text=text,
        mentions_bot=kind == "slack.app_mention" or bool(mentioned & (bots - {""})),
        # Our own replies come back as bot messages: they must never start runs.
        from_bot=bool(event.get("bot_id")) or event.get("subtype") == "bot_message",
        reply={"channel": channel, "thread_ts": thread} if channel else {},
    )


def jira(kind: str, payload: dict[str, Any]) -> Facts:
    issue = _dict(payload.get("issue"))
    fields = _dict(issue.get("fields"))
    reporter = _dict(fields.get("reporter"))
    resolution = _dict(fields.get("resolution"))
    status = _str(_dict(fields.get("status")).get("name")).lower()
    labels = _tags(fields.get("labels"))
    category = _str(_dict(fields.get("issuetype")).get("name"), 100).lower()
    key = _str(issue.get("key"))
    summary = _str(fields.get("summary"))
    comment = _dict(payload.get("comment"))
    description = adf_text(fields.get("description"))
    text = adf_text(comment.get("body")) if kind.startswith("jira.comment") else description
    return Facts(
        customer=customer(
            "jira",
            reporter.get("accountId"),
            reporter.get("displayName"),
            reporter.get("emailAddress"),
        ),
        ticket=Ref(f"jira:issue:{key}", summary, labels[0] if labels else category)
        if key
        else None,
        text=_join(summary, text) if not kind.startswith("jira.comment") else _join(text),
        status=status,
        priority=_str(_dict(fields.get("priority")).get("name")).lower(),
        resolved=bool(resolution) or status in RESOLVED_STATUSES,
        resolution=_str(resolution.get("name")),
        tags=labels,
    )


def generic(kind: str, payload: dict[str, Any]) -> Facts:
    who = _dict(payload.get("customer"))
    ticket = _dict(payload.get("ticket"))
    resolution = _dict(payload.get("resolution"))
    ticket_id = _str(ticket.get("id"))
    status = _str(ticket.get("status")).lower()
    articles = [
        Ref(f"generic:article:{_str(a.get('id'))}", _str(a.get("title")))
        for a in (resolution.get("articles") or [])[:20]
        if isinstance(a, dict) and _str(a.get("id"))
    ]
    summary = _str(resolution.get("summary"), TEXT_LIMIT)
    return Facts(
        customer=customer("generic", who.get("id"), who.get("name"), who.get("email")),
        ticket=Ref(
            f"generic:ticket:{ticket_id}",
            _str(ticket.get("subject")),
            _str(ticket.get("category"), 100),
        )
        if ticket_id
        else None,
        text=_str(payload.get("text"), TEXT_LIMIT),
        status=status,
        priority=_str(ticket.get("priority")).lower(),
        resolved=bool(summary) or status in RESOLVED_STATUSES,
        resolution=summary,
        resolution_key=f"generic:resolution:{_str(resolution.get('id'))}"
        if _str(resolution.get("id"))
        else "",
        articles=articles,
        tags=_tags(ticket.get("tags")),
    )


PARSERS = {"zendesk": zendesk, "slack": slack, "jira": jira, "generic": generic}


def facts(source: str, kind: str, payload: dict[str, Any]) -> Facts:
    parser = PARSERS.get(source)
    return parser(kind, payload) if parser is not None else Facts()
