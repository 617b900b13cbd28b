"""HTTP tools: allowlist, size and time limits, redirects, status errors."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agentflow.kernel.tools import ToolCaller, ToolRegistry
from agentflow.kernel.tools.http import http_tool, url_allowed


def handler(request: httpx.Request) -> httpx.Response:
    path = request.url.raw_path.decode().split("?")[0]
    if path.startswith("/orders/"):
        return httpx.Response(
            200, json={"id": path.rsplit("/", 1)[1], "q": request.url.query.decode()}
        )
    if path == "/big":
        return httpx.Response(200, text="x" * 5000)
    if path == "/redirect":
        return httpx.Response(302, headers={"location": "https://evil.example/steal"})
    if path == "/slow":
        raise httpx.ReadTimeout("slow", request=request)
    return httpx.Response(404, text="not here")


@pytest.fixture
async def registry() -> ToolRegistry:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    common: dict[str, Any] = {
        "allowed_prefixes": ["https://shop.example/"],
        "client": client,
        "timeout": 1.0,
    }
    return ToolRegistry(
        [
            http_tool("order", url="https://shop.example/orders/{order_id}", **common),
            http_tool(
                "order_q",
                url="https://shop.example/orders/{order_id}",
                input_schema={
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}, "expand": {"type": "boolean"}},
                },
                **common,
            ),
            http_tool("big", url="https://shop.example/big", max_response_bytes=1000, **common),
            http_tool("redirect", url="https://shop.example/redirect", **common),
            http_tool("slow", url="https://shop.example/slow", **common),
            http_tool("missing", url="https://shop.example/missing", **common),
        ]
    )


def test_url_allowed_boundaries() -> None:
    assert url_allowed("https://api.x.com/v1", ["https://api.x.com"])
    assert not url_allowed("https://api.x.com.evil.io/v1", ["https://api.x.com"])
    assert not url_allowed("https://api.x.com@evil.io/", ["https://api.x.com"])
    assert url_allowed("https://api.x.com/v1/a", ["https://api.x.com/v1/"])
    assert not url_allowed("https://api.x.com/v2", ["https://api.x.com/v1/"])


async def test_http_tools(registry: ToolRegistry) -> None:
    caller = ToolCaller.of([tool.id for tool in registry.tools], "execute")
    ok = await registry.invoke("order", {"order_id": "A 1/.."}, caller=caller)
    assert ok.ok, ok
    assert ok.output["id"] == "A%201%2F.."  # quoted: the argument cannot change the path
    q = await registry.invoke("order_q", {"order_id": "A1", "expand": True}, caller=caller)
    assert q.output["q"] == "expand=true"
    big, redirect, slow, missing = await asyncio.gather(
        *(
            registry.invoke(name, {}, caller=caller)
            for name in ("big", "redirect", "slow", "missing")
        )
    )
    assert big.status == "error"
    assert "larger than 1000" in (big.error or "")
    assert redirect.status == "error"
    assert "not followed" in (redirect.error or "")
    assert slow.status == "timeout"
    assert missing.status == "error"
    assert "HTTP 404" in (missing.error or "")


def test_http_tool_needs_an_allowlist() -> None:
    with pytest.raises(ValueError, match="allowed_prefixes"):
        http_tool("x", url="https://a.example/", allowed_prefixes=[])
