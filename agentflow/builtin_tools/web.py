"""The HTTP built-ins: ``http_request`` and ``lookup_order``, and `send` that every HTTP
built-in (tickets included) goes through.

`send` is the kernel's HTTP tool machinery (`agentflow.kernel.tools.http`: no redirects,
the body read up to a byte limit, a time limit) for one request, after checking the URL
against the operator's ``TOOL_ALLOWED_URLS`` as well as the tenant's own prefixes: a
setting validated yesterday cannot reach a host the operator removed today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from agentflow.builtin_tools.config import (
    HttpRequestSettings,
    LookupOrderSettings,
    allowed_urls,
    resolve_references,
)
from agentflow.kernel.tools import Tool, ToolError
from agentflow.kernel.tools.http import http_tool, url_allowed

__all__ = ["http_request_tool", "lookup_order_tool", "send"]

_ORDER_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SCALAR = {"type": ["string", "number", "boolean"]}


async def send(
    tool_id: str,
    method: str,
    url: str,
    *,
    prefixes: Sequence[str],
    payload: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = 1_000_000,
    seconds: float = 10.0,
) -> Any:
    """One request: ``payload`` is the query (GET) or the JSON body (POST, PUT); the decoded
    response body comes back, and redirects, HTTP errors and oversize bodies raise."""
    if not url_allowed(url, allowed_urls()):
        raise ToolError(f"{tool_id}: {url!r} is not under the operator's TOOL_ALLOWED_URLS")
    request = http_tool(
        tool_id,
        url=url.replace("{", "{{").replace("}", "}}"),  # a literal URL, not a template
        allowed_prefixes=list(prefixes),
        method=method,
        input_schema={"type": "object"},
        headers=headers,
        max_response_bytes=max_bytes,
        timeout=seconds,
    )
    return await request.handler(dict(payload or {}))


# ----------------------------------------------------------------------------- http_request


def _with_query(url: str, query: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(URL, parameters): the URL's own query joins ``query`` (httpx would replace it)."""
    if not query:
        return url, {}
    parts = urlsplit(url)
    own = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(query="")), {**own, **query}


def http_request_tool(options: HttpRequestSettings) -> Tool:
    methods = ["GET", "POST"] if options.allow_post else ["GET"]

    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        method, url = arguments.get("method", "GET"), arguments["url"]
        if method == "POST":
            payload = arguments.get("body") or {}
        elif "body" in arguments:
            raise ToolError("http_request: a GET request has no body (use query)")
        else:
            url, payload = _with_query(url, arguments.get("query") or {})
        body = await send(
            "http_request",
            method,
            url,
            prefixes=options.allowed_hosts,
            payload=payload,
            max_bytes=options.max_bytes,
            seconds=options.timeout,
        )
        return {"url": arguments["url"], "body": body}

    return Tool(
        id="http_request",
        handler=call,
        description=(
            f"{' or '.join(methods)} a URL under: {', '.join(options.allowed_hosts)}. "
            "Returns the response body (JSON decoded); redirects are not followed."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "url": {"type": "string", "minLength": 8, "maxLength": 2000},
                "method": {"enum": methods, "default": "GET"},
                "query": {"type": "object", "additionalProperties": _SCALAR, "maxProperties": 50},
                "body": {"type": "object"},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"url": {"type": "string"}, "body": {}},
            "required": ["url", "body"],
        },
        required_permissions="execute" if options.allow_post else "read",
        # A POST changes something somewhere: a human confirms it.
        safety_level="requires_confirmation" if options.allow_post else "safe",
        timeout=options.timeout + 1.0,
        source="builtin",
    )


# ----------------------------------------------------------------------------- lookup_order


def lookup_order_tool(options: LookupOrderSettings) -> Tool:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        order_id = arguments["order_id"]
        url = options.url_template.replace("{order_id}", quote(order_id, safe=""))
        headers = {
            name: resolve_references(value, f"lookup_order header {name}")
            for name, value in options.headers.items()
        }
        order = await send(
            "lookup_order",
            "GET",
            url,
            prefixes=allowed_urls(),
            headers=headers,
            max_bytes=options.max_bytes,
            seconds=options.timeout,
        )
        return {"order_id": order_id, "order": order}

    return Tool(
        id="lookup_order",
        handler=call,
        description="Look up an order by its id in the shop's order system.",
        input_schema={
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": _ORDER_ID}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "order": {}},
            "required": ["order_id", "order"],
        },
        required_permissions="read",
        safety_level="safe",
        timeout=options.timeout + 1.0,
        source="builtin",
    )
