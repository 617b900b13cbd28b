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
from dataclasses import dataclass
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
    if not allowed_prefixes:
        raise ValueError(f"http tool {id!r}: allowed_prefixes is required (deny by default)")
    placeholders = [name for _, name, _, _ in string.Formatter().parse(url) if name]
    endpoint = _Endpoint(
        id=id,
        url=url,
        allowed_prefixes=allowed_prefixes,
        method=method.upper(),
        placeholders=placeholders,
        headers=dict(headers or {}),
        max_response_bytes=max_response_bytes,
        timeout=timeout,
        client=client,
    )
    schema = input_schema or {
        "type": "object",
        "properties": {name: {"type": "string"} for name in placeholders},
        "required": placeholders,
    }
    return Tool(
        id=id,
        handler=endpoint.call,
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


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One configured endpoint; `call` is the tool's handler."""

    id: str
    url: str
    allowed_prefixes: Sequence[str]
    method: str
    placeholders: list[str]
    headers: dict[str, str]
    max_response_bytes: int
    timeout: float
    client: httpx.AsyncClient | None

    async def call(self, arguments: dict[str, Any]) -> Any:
        target, params, body = self._request_parts(arguments)
        response, content = await self._fetch(target, params, body)
        return self._output(response, content)

    def _request_parts(
        self, arguments: dict[str, Any]
    ) -> tuple[str, dict[str, str] | None, dict[str, Any] | None]:
        """(allowed URL, query parameters, JSON body) from the tool's arguments."""
        rest = dict(arguments)
        values = {name: quote(str(rest.pop(name, "")), safe="") for name in self.placeholders}
        target = self.url.format(**values)
        if not url_allowed(target, self.allowed_prefixes):
            raise ToolError(f"{self.id}: {target!r} is not an allowed URL")
        if self.method in ("POST", "PUT", "PATCH"):
            return target, None, rest
        if rest:
            params = {
                key: value if isinstance(value, str) else json.dumps(value)
                for key, value in rest.items()
            }
            return target, params, None
        return target, None, None

    async def _fetch(
        self, target: str, params: dict[str, str] | None, body: dict[str, Any] | None
    ) -> tuple[httpx.Response, bytes]:
        """Send without following redirects; read the body up to the size limit."""
        http = self.client or httpx.AsyncClient()
        try:
            request = http.build_request(
                self.method,
                target,
                params=params,
                json=body,
                headers=self.headers,
                timeout=self.timeout,
            )
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                return response, await self._read_limited(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise TimeoutError(f"{self.id}: no response within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"{self.id}: {type(exc).__name__}") from None
        finally:
            if self.client is None:
                await http.aclose()

    async def _read_limited(self, response: httpx.Response) -> bytes:
        chunks = bytearray()
        async for chunk in response.aiter_bytes():
            chunks += chunk
            if len(chunks) > self.max_response_bytes:
                raise ToolError(f"{self.id}: response larger than {self.max_response_bytes} bytes")
        return bytes(chunks)

    def _output(self, response: httpx.Response, content: bytes) -> Any:
        """The decoded body (JSON when the response says so); redirects and errors raise."""
        if response.is_redirect:
            location = response.headers.get("location")
            raise ToolError(f"{self.id}: redirect to {location!r} not followed")
        text = content.decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            raise ToolError(f"{self.id}: HTTP {response.status_code}: {text[:200]}")
        if "json" in response.headers.get("content-type", ""):
            try:
                return json.loads(text)
            except ValueError:
                raise ToolError(f"{self.id}: invalid JSON in the response") from None
        return text
