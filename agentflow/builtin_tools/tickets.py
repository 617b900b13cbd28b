"""``create_ticket`` / ``update_ticket`` over the Zendesk and Jira REST APIs.

Zendesk (Tickets API v2, API-token basic auth ``{email}/token:{api_token}``):
``POST /api/v2/tickets.json {"ticket": {subject, comment: {body}, priority, tags}}`` answers
201 ``{"ticket": {"id", "status", ...}}``; ``PUT /api/v2/tickets/{id}.json`` answers 200
(``additional_tags`` adds tags, ``tags`` replaces them).

Jira Cloud (REST v3, basic auth ``{email}:{api_token}``): ``POST /rest/api/3/issue
{"fields": {project: {key}, summary, description (ADF), issuetype: {name}, priority: {name},
labels}}`` answers 201 ``{"id", "key", "self"}``; ``PUT /rest/api/3/issue/{key}`` answers
204, a comment going in ``update.comment[].add.body``, added labels in ``update.labels[].add``.

Which system a call goes to: the only one configured, or the call's ``system`` argument
when both are.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

from agentflow.builtin_tools.config import BuiltinToolSettings, JiraSettings, ZendeskSettings
from agentflow.builtin_tools.config import resolve_secret as _secret
from agentflow.builtin_tools.web import send
from agentflow.kernel.tools import RateLimit, Tool, ToolError

__all__ = ["ticket_tools"]

PRIORITIES = ("low", "normal", "high", "urgent")
# Zendesk's priorities are ours; Jira's default scheme names them differently.
_JIRA_PRIORITY = {"low": "Low", "normal": "Medium", "high": "High", "urgent": "Highest"}
_ZENDESK_STATUSES = ("open", "pending", "hold", "solved")
_ZENDESK_ID = re.compile(r"^[0-9]{1,20}$")
_JIRA_KEY = re.compile(r"^([A-Z][A-Z0-9_]{1,9}-[0-9]{1,12}|[0-9]{1,20})$")
_MAX_BYTES = 500_000

_TAGS = {
    "type": "array",
    "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,80}$"},
    "maxItems": 20,
    "uniqueItems": True,
}
_TICKET_OUT = {
    "type": "object",
    "properties": {
        "system": {"enum": ["zendesk", "jira"]},
        "id": {"type": "string"},
        "key": {"type": "string"},
        "url": {"type": "string"},
        "status": {"type": "string"},
    },
    "required": ["system", "id"],
}


def _basic(user: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


def _adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document: one paragraph per line block."""
    paragraphs = [block for block in text.split("\n\n") if block.strip()] or [text]
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": block}]}
            for block in paragraphs
        ],
    }


# ----------------------------------------------------------------------------------- Zendesk


class _Zendesk:
    name = "zendesk"

    def __init__(self, options: ZendeskSettings) -> None:
        self.options = options

    async def _call(self, tool_id: str, method: str, path: str, body: dict[str, Any]) -> Any:
        options = self.options
        token = _secret(options.api_token, f"{tool_id}: zendesk.api_token")
        answer = await send(
            tool_id,
            method,
            f"{options.base_url}{path}",
            prefixes=[options.base_url],
            payload=body,
            headers=_basic(f"{options.email}/token", token),
            max_bytes=_MAX_BYTES,
            seconds=options.timeout,
        )
        ticket = answer.get("ticket") if isinstance(answer, dict) else None
        if not isinstance(ticket, dict) or "id" not in ticket:
            raise ToolError(f"{tool_id}: Zendesk answered without a ticket")
        return {
            "system": "zendesk",
            "id": str(ticket["id"]),
            "url": f"{options.base_url}/agent/tickets/{ticket['id']}",
            "status": str(ticket.get("status") or ""),
        }

    async def create(self, arguments: dict[str, Any]) -> dict[str, Any]:
        ticket: dict[str, Any] = {
            "subject": arguments["subject"],
            "comment": {"body": arguments["description"]},
        }
        if "priority" in arguments:
            ticket["priority"] = arguments["priority"]
        if "tags" in arguments:
            ticket["tags"] = arguments["tags"]
        return await self._call("create_ticket", "POST", "/api/v2/tickets.json", {"ticket": ticket})

    async def update(self, arguments: dict[str, Any]) -> dict[str, Any]:
        ticket_id = arguments["ticket_id"]
        if not _ZENDESK_ID.match(ticket_id):
            raise ToolError(f"update_ticket: {ticket_id!r} is not a Zendesk ticket id")
        ticket: dict[str, Any] = {}
        if "comment" in arguments:
            ticket["comment"] = {
                "body": arguments["comment"],
                "public": arguments.get("public", False),
            }
        for name in ("status", "priority", "tags"):
            if name in arguments:
                ticket[name] = arguments[name]
        if "add_tags" in arguments:  # added to the ticket's own (``tags`` replaces them)
            ticket["additional_tags"] = arguments["add_tags"]
        path = f"/api/v2/tickets/{quote(ticket_id, safe='')}.json"
        return await self._call("update_ticket", "PUT", path, {"ticket": ticket})


# -------------------------------------------------------------------------------------- Jira


class _Jira:
    name = "jira"

    def __init__(self, options: JiraSettings) -> None:
        self.options = options

    async def _call(self, tool_id: str, method: str, path: str, body: dict[str, Any]) -> Any:
        options = self.options
        token = _secret(options.api_token, f"{tool_id}: jira.api_token")
        return await send(
            tool_id,
            method,
            f"{options.base_url}{path}",
            prefixes=[options.base_url],
            payload=body,
            headers=_basic(options.email, token),
            max_bytes=_MAX_BYTES,
            seconds=options.timeout,
        )

    async def create(self, arguments: dict[str, Any]) -> dict[str, Any]:
        options = self.options
        fields: dict[str, Any] = {
            "project": {"key": options.project_key},
            "summary": arguments["subject"],
            "description": _adf(arguments["description"]),
            "issuetype": {"name": options.issue_type},
        }
        if "priority" in arguments:
            fields["priority"] = {"name": _JIRA_PRIORITY[arguments["priority"]]}
        if "tags" in arguments:
            fields["labels"] = arguments["tags"]
        answer = await self._call("create_ticket", "POST", "/rest/api/3/issue", {"fields": fields})
        if not isinstance(answer, dict) or "key" not in answer or "id" not in answer:
            raise ToolError("create_ticket: Jira answered without an issue key")
        key = str(answer["key"])
        return {
            "system": "jira",
            "id": str(answer["id"]),
            "key": key,
            "url": f"{options.base_url}/browse/{key}",
        }

    async def update(self, arguments: dict[str, Any]) -> dict[str, Any]:
        key = arguments["ticket_id"]
        if not _JIRA_KEY.match(key):
            raise ToolError(f"update_ticket: {key!r} is not a Jira issue key")
        if "status" in arguments:
            # Jira changes status through workflow transitions, not by setting a field.
            raise ToolError("update_ticket: Jira issues change status through transitions")
        body: dict[str, Any] = {"fields": {}}
        if "priority" in arguments:
            body["fields"]["priority"] = {"name": _JIRA_PRIORITY[arguments["priority"]]}
        if "tags" in arguments:
            body["fields"]["labels"] = arguments["tags"]
        update: dict[str, Any] = {}
        if "add_tags" in arguments:  # added to the issue's labels (``tags`` replaces them)
            update["labels"] = [{"add": label} for label in arguments["add_tags"]]
        if "comment" in arguments:
            update["comment"] = [{"add": {"body": _adf(arguments["comment"])}}]
        if update:
            body["update"] = update
        await self._call("update_ticket", "PUT", f"/rest/api/3/issue/{quote(key, safe='')}", body)
        return {
            "system": "jira",
            "id": key,
            "key": key,
            "url": f"{self.options.base_url}/browse/{key}",
        }


# ------------------------------------------------------------------------------------- tools


def _system_property(systems: dict[str, Any]) -> dict[str, Any]:
    return {"system": {"enum": sorted(systems)}} if len(systems) > 1 else {}


def _pick(systems: dict[str, Any], arguments: dict[str, Any], tool_id: str) -> Any:
    if len(systems) == 1:
        return next(iter(systems.values()))
    if "system" not in arguments:
        raise ToolError(f"{tool_id}: say which system: {' or '.join(sorted(systems))}")
    return systems[arguments["system"]]


def _create_tool(systems: dict[str, Any]) -> Tool:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await _pick(systems, arguments, "create_ticket").create(arguments)
        return result

    return Tool(
        id="create_ticket",
        handler=call,
        description=f"Open a support ticket in {' or '.join(sorted(systems))}.",
        input_schema={
            "type": "object",
            "properties": {
                "subject": {"type": "string", "minLength": 1, "maxLength": 250},
                "description": {"type": "string", "minLength": 1, "maxLength": 20_000},
                "priority": {"enum": list(PRIORITIES)},
                "tags": _TAGS,
                **_system_property(systems),
            },
            "required": ["subject", "description"],
            "additionalProperties": False,
        },
        output_schema=_TICKET_OUT,
        required_permissions="execute",
        safety_level="requires_confirmation",
        timeout=max(system.options.timeout for system in systems.values()) + 1.0,
        rate_limit=RateLimit.parse("200/hour"),
        source="builtin",
    )


def _update_tool(systems: dict[str, Any]) -> Tool:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await _pick(systems, arguments, "update_ticket").update(arguments)
        return result

    changes = ("comment", "status", "priority", "tags", "add_tags")
    return Tool(
        id="update_ticket",
        handler=call,
        description=(
            "Comment on or change a ticket (Zendesk id, or Jira issue key). "
            "status applies to Zendesk only."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "ticket_id": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,40}$"},
                "comment": {"type": "string", "minLength": 1, "maxLength": 20_000},
                "public": {
                    "type": "boolean",
                    "default": False,
                    "description": "Zendesk: show the comment to the requester (default: an "
                    "internal note)",
                },
                "status": {"enum": list(_ZENDESK_STATUSES)},
                "priority": {"enum": list(PRIORITIES)},
                "tags": {**_TAGS, "description": "Replaces the ticket's tags (Jira: labels)"},
                "add_tags": {**_TAGS, "description": "Added to the ticket's tags (Jira: labels)"},
                **_system_property(systems),
            },
            "required": ["ticket_id"],
            "anyOf": [{"required": [name]} for name in changes],
            "additionalProperties": False,
        },
        output_schema=_TICKET_OUT,
        required_permissions="execute",
        safety_level="requires_confirmation",
        timeout=max(system.options.timeout for system in systems.values()) + 1.0,
        rate_limit=RateLimit.parse("200/hour"),
        source="builtin",
    )


def ticket_tools(options: BuiltinToolSettings) -> list[Tool]:
    """create_ticket and update_ticket over the configured systems (none: no tools)."""
    systems: dict[str, Any] = {}
    if options.zendesk is not None:
        systems["zendesk"] = _Zendesk(options.zendesk)
    if options.jira is not None:
        systems["jira"] = _Jira(options.jira)
    if not systems:
        return []
    return [_create_tool(systems), _update_tool(systems)]
