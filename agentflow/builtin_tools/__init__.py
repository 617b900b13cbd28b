"""The built-in tools a support team needs, as kernel `Tool`s (SPEC 4.9, docs/tools.md).

``builtin_tools(ctx)`` builds them for one agent from its config's ``tool_settings``
(`BuiltinToolSettings`); the agent's tool registry registers them next to its Python and MCP
tools, and the registry's deny-by-default rules (grants, levels, schemas, approvals, rate
limits, fencing of outputs) apply to them like to any other tool.

| id | needs | safety |
|---|---|---|
| ``http_request`` | ``http_request`` | safe (GET only) / requires_confirmation (``allow_post``) |
| ``knowledge_search`` | nothing | safe |
| ``create_ticket``, ``update_ticket`` | ``zendesk`` and/or ``jira`` | requires_confirmation |
| ``send_email`` | ``send_email`` | requires_confirmation |
| ``lookup_order`` | ``lookup_order`` | safe |
| ``handoff_to_human`` | nothing | safe |
"""

from __future__ import annotations

from agentflow.builtin_tools.config import BuiltinToolContext, BuiltinToolSettings
from agentflow.builtin_tools.mail import send_email_tool
from agentflow.builtin_tools.tickets import ticket_tools
from agentflow.builtin_tools.web import http_request_tool, lookup_order_tool
from agentflow.builtin_tools.workspace import handoff_tool, knowledge_search_tool
from agentflow.kernel.tools import Tool

__all__ = ["BUILTIN_TOOL_IDS", "BuiltinToolContext", "BuiltinToolSettings", "builtin_tools"]

BUILTIN_TOOL_IDS = (
    "http_request",
    "knowledge_search",
    "create_ticket",
    "update_ticket",
    "send_email",
    "lookup_order",
    "handoff_to_human",
)


def builtin_tools(ctx: BuiltinToolContext) -> list[Tool]:
    """The built-ins this agent's settings configure (knowledge_search and
    handoff_to_human always), in `BUILTIN_TOOL_IDS` order."""
    options = ctx.settings
    tools: list[Tool] = []
    if options.http_request is not None:
        tools.append(http_request_tool(options.http_request))
    tools.append(knowledge_search_tool(ctx))
    tools.extend(ticket_tools(options))
    if options.send_email is not None:
        tools.append(send_email_tool(options.send_email))
    if options.lookup_order is not None:
        tools.append(lookup_order_tool(options.lookup_order))
    tools.append(handoff_tool(ctx))
    return tools
