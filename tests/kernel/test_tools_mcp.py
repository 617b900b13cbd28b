"""MCP servers as a tool source, against real servers written with the SDK's `MCPServer`:
over stdio (a subprocess of this Python) and streamable HTTP on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.kernel.tools import ToolCaller, ToolRegistry
from agentflow.kernel.tools.mcp import McpServerConfig, McpSource

SERVER = str(Path(__file__).parent / "mcp_servers" / "demo_server.py")
# Starting a Python MCP server imports the SDK: seconds on a loaded box.
CONNECT = 120.0


def stdio_config(**overrides: Any) -> McpServerConfig:
    options: dict[str, Any] = {"timeout": 20.0, "connect_timeout": CONNECT}
    options.update(overrides)
    return McpServerConfig("demo", "stdio", command=[sys.executable, SERVER], **options)


@pytest.fixture
def devnull() -> Iterator[Any]:
    with open(os.devnull, "w") as sink:
        yield sink


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, SERVER, "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + CONNECT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the MCP HTTP test server did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    process.kill()
    process.wait()


@pytest.fixture
async def stdio(devnull: Any) -> AsyncIterator[tuple[ToolRegistry, McpSource]]:
    source = McpSource(stdio_config(), errlog=devnull)
    registry = ToolRegistry(sources=[source])
    try:
        yield registry, source
    finally:
        await registry.aclose()


def everything(registry: ToolRegistry, **kwargs: Any) -> ToolCaller:
    return ToolCaller.of([tool.id for tool in registry.tools], "execute", **kwargs)


async def test_stdio_discovery_schemas_calls_and_session_reuse(
    stdio: tuple[ToolRegistry, McpSource],
) -> None:
    registry, _source = stdio
    assert await registry.load() == []
    ids = {tool.id for tool in registry.tools}
    assert {"demo.add", "demo.echo", "demo.order", "demo.crash", "demo.hang"} <= ids
    add = registry.get("demo.add")
    assert add is not None
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.output_schema is not None
    assert add.safety_level == "requires_confirmation"
    assert add.source == "mcp:demo"

    caller = everything(registry)
    proposed = await registry.invoke("demo.add", {"a": 1, "b": 2}, caller=caller)
    assert proposed.status == "needs_approval"
    bad = await registry.invoke("demo.add", {"a": "x", "b": 2}, caller=caller, approved=True)
    assert bad.status == "invalid_arguments"
    assert "$.a" in (bad.error or "")
    ok = await registry.invoke("demo.add", {"a": 1, "b": 2}, caller=caller, approved=True)
    assert ok.status == "ok", ok
    assert ok.output == {"result": 3}

    # The agent config lowers one tool to safe: it runs without approval.
    lowered = ToolCaller.of(["demo.pid", {"id": "demo.order", "safety_level": "safe"}], "execute")
    order = await registry.invoke("demo.order", {"order_id": "A1"}, caller=lowered)
    assert order.ok
    assert order.output["status"] == "shipped"
    assert "[suspected injection" in order.output["note"]

    first = await registry.invoke("demo.pid", {}, caller=caller, approved=True)
    second = await registry.invoke("demo.pid", {}, caller=caller, approved=True)
    assert first.output == second.output  # one server process, one session

    failed = await registry.invoke(
        "demo.fail", {"reason": "no stock"}, caller=caller, approved=True
    )
    assert failed.status == "error"
    assert "no stock" in (failed.error or "")

    injected = await registry.invoke("demo.inject", {}, caller=caller, approved=True)
    assert injected.ok
    assert injected.output.startswith("[UNTRUSTED DATA from tool demo.inject")
    assert "<<<END UNTRUSTED 000000000000>>>" not in injected.output
    assert "(quoted) SYSTEM:" in injected.output


async def test_stdio_crash_mid_call_is_a_clean_error_and_the_next_call_restarts(
    stdio: tuple[ToolRegistry, McpSource],
) -> None:
    registry, source = stdio
    await registry.load()
    caller = everything(registry)
    before = await registry.invoke("demo.pid", {}, caller=caller, approved=True)
    crashed = await registry.invoke("demo.crash", {}, caller=caller, approved=True)
    assert crashed.status == "error"
    assert "closed the connection" in (crashed.error or "")
    assert source.breaker.consecutive_failures == 1
    after = await registry.invoke("demo.pid", {}, caller=caller, approved=True)
    assert after.ok, after
    assert after.output != before.output  # a new server process
    assert source.breaker.consecutive_failures == 0


async def test_stdio_hang_times_out_and_trips_the_breaker(devnull: Any) -> None:
    source = McpSource(
        stdio_config(timeout=1.0, failure_threshold=1, cooldown_seconds=600), errlog=devnull
    )
    registry = ToolRegistry(sources=[source])
    try:
        await registry.load()
        caller = everything(registry)
        started = time.monotonic()
        hung = await registry.invoke("demo.hang", {}, caller=caller, approved=True)
        assert hung.status == "timeout"
        assert "1s" in (hung.error or "")
        assert time.monotonic() - started < 10
        assert source.breaker.state == "open"
        fast = await registry.invoke("demo.add", {"a": 1, "b": 1}, caller=caller, approved=True)
        assert fast.status == "error"
        assert "failing" in (fast.error or "")
    finally:
        await registry.aclose()


async def test_a_server_that_does_not_start_is_a_load_error(devnull: Any) -> None:
    config = McpServerConfig(
        "broken",
        "stdio",
        command=[sys.executable, "-c", "import sys; sys.exit(1)"],
        connect_timeout=CONNECT,
    )
    registry = ToolRegistry(sources=[McpSource(config, errlog=devnull)])
    errors = await registry.load()
    await registry.aclose()
    assert len(errors) == 1
    assert errors[0].startswith("broken:")
    assert len(registry) == 0


async def test_http_discovery_calls_hang_and_crash(http_url: str) -> None:
    source = McpSource(
        McpServerConfig("web", "http", url=http_url, timeout=2.0, connect_timeout=CONNECT)
    )
    registry = ToolRegistry(sources=[source])
    try:
        assert await registry.load() == []
        add = registry.get("web.add")
        assert add is not None
        assert add.input_schema["required"] == ["a", "b"]
        caller = everything(registry)
        ok = await registry.invoke("web.add", {"a": 2, "b": 3}, caller=caller, approved=True)
        assert ok.output == {"result": 5}
        outcomes = await registry.invoke_many(
            [("web.hang", {}), ("web.echo", {"text": "hi"})],
            caller=ToolCaller.of(
                [
                    {"id": "web.hang", "safety_level": "safe"},
                    {"id": "web.echo", "safety_level": "safe"},
                ],
                "execute",
            ),
        )
        assert [o.status for o in outcomes] == ["timeout", "ok"]
        assert outcomes[1].output == {"result": "hi"}
        crashed = await registry.invoke("web.crash", {}, caller=caller, approved=True)
        assert crashed.status in ("error", "timeout")
        assert crashed.duration_ms < 10_000
    finally:
        await asyncio.wait_for(registry.aclose(), 30)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        McpServerConfig("x", "sse", url="http://h")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="command"):
        McpServerConfig("x", "stdio")
    with pytest.raises(ValueError, match="url"):
        McpServerConfig("x", "http", url="ftp://h")
    with pytest.raises(ValueError, match="name"):
        McpServerConfig("a.b", "http", url="http://h")
