"""HTTP endpoints as tools (httpx): allowlisted hosts, size and time limits.

The URL may carry ``{placeholders}`` filled from the arguments (URL-quoted); the remaining
arguments go in the query string (GET, DELETE) or as the JSON body (POST, PUT, PATCH). The
final URL must start with one of ``allowed_prefixes`` (scheme, host, port and path prefix),
redirects are not followed (a redirect could leave the allowlist), and the response body
is read up to ``max_response_bytes``: a larger one is an error, not a truncated answer.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from agentflow.kernel.tools.base import PermissionLevel, SafetyLevel, Tool, ToolError

__all__ = ["http_tool", "url_allowed"]


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether ``url`` starts with an allowed prefix at a boundary (``https://api.x.com``
    allows ``https://api.x.com/v1`` but not ``https://api.x.com.evil.io``)."""
    for prefix in prefixes:
        if url == prefix:
            return True
        if url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#"):
            return True
    return False


def http_tool(
    id: str,
    *,
    url: str,
    allowed_prefixes: Sequence[str],
    method: str = "GET",
    description: str = "",
    input_schema: Mapping[str, Any] | None = None,
    output_schema: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    max_response_bytes: int = 1_000_000,
    timeout: float = 10.0,
    required_permissions: PermissionLevel = "execute",
    safety_level: SafetyLevel = "safe",
    cost_per_call: Decimal | str | int = 0,
    rate_limit: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> Tool:
    method = method.upper()
    if not allowed_prefixes:
        raise ValueError(f"http tool {id!r}: allowed_prefixes is required (deny by default)")
    placeholders = [name for _, name, _, _ in string.Formatter().parse(url) if name]
    own_headers = dict(headers or {})

    async def handler(arguments: dict[str, Any]) -> Any:
        rest = dict(arguments)
        values = {name: quote(str(rest.pop(name, "")), safe="") for name in placeholders}
        target = url.format(**values)
        if not url_allowed(target, allowed_prefixes):
            raise ToolError(f"{id}: {target!r} is not an allowed URL")
        body = None
        params = None
        if method in ("POST", "PUT", "PATCH"):
            body = rest
        elif rest:
            params = {
                key: value if isinstance(value, str) else json.dumps(value)
                for key, value in rest.items()
            }
        http = client or httpx.AsyncClient()
        try:
            request = http.build_request(
                method, target, params=params, json=body, headers=own_headers, timeout=timeout
            )
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                chunks = bytearray()
                async for chunk in response.aiter_bytes():
                    chunks += chunk
                    if len(chunks) > max_response_bytes:
                        raise ToolError(f"{id}: response larger than {max_response_bytes} bytes")
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise TimeoutError(f"{id}: no response within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"{id}: {type(exc).__name__}") from None
        finally:
            if client is None:
                await http.aclose()
        if response.is_redirect:
            raise ToolError(f"{id}: redirect to {response.headers.get('location')!r} not followed")
        text = bytes(chunks).decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            raise ToolError(f"{id}: HTTP {response.status_code}: {text[:200]}")
        if "json" in response.headers.get("content-type", ""):
            try:
                return json.loads(text)
            except ValueError:
                raise ToolError(f"{id}: invalid JSON in the response") from None
        return text

    schema = input_schema or {
        "type": "object",
        "properties": {name: {"type": "string"} for name in placeholders},
        "required": placeholders,
    }
    return Tool(
        id=id,
        handler=handler,
        description=description,
        input_schema=schema,
        output_schema=output_schema,
        required_permissions=required_permissions,
        timeout=timeout + 1.0,
        cost_per_call=Decimal(str(cost_per_call)),
        rate_limit=rate_limit,  # type: ignore[arg-type]
        safety_level=safety_level,
        source="http",
    )
