"""MCP servers as a tool source, through the official `mcp` SDK (stdio and streamable HTTP).

Each server gets one session, opened lazily on first use and reused by every call (a
subprocess per call would cost a process start each time). The session lives in a task
of its own, because the SDK's client is an anyio context that must be entered and left in
the same task; calls from any task go through it.

Failures stay calls' failures: a server that crashes mid-call fails that call with an error
and its session is dropped (the next call starts a new one); a call that hangs is cut at the
tool's timeout. Both count against a `CircuitBreaker`: after ``failure_threshold``
consecutive failures calls fail fast, without touching the server, until the cool-down
lets one probe through. A tool's own error (``isError``) is a failed call but a healthy
server, so it does not trip the breaker.

Discovered tools are ``<server>.<tool>`` with the server's JSON schemas, and default to
``requires_confirmation``: the agent config may lower one to ``safe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TextIO

import structlog

from agentflow.kernel.llm.base import CircuitOpen
from agentflow.kernel.llm.resilience import CircuitBreaker
from agentflow.kernel.tools.base import SafetyLevel, Tool, ToolError

__all__ = ["McpServerConfig", "McpSource"]

log = structlog.get_logger(__name__)

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One entry of an agent's ``mcp_servers`` (already checked against the operator's
    allowlists by the platform; the kernel runs what it is given).

    ``command`` is ``[executable, *args]`` for stdio; ``url`` and ``headers`` for http.
    ``timeout`` bounds each call and the session start; ``connect_timeout`` bounds starting
    the server and listing its tools.
    """

    name: str
    transport: Literal["stdio", "http"]
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    connect_timeout: float = 30.0
    safety_level: SafetyLevel = "requires_confirmation"
    required_permissions: Literal["read", "execute", "admin"] = "execute"
    cost_per_call: Decimal = Decimal(0)
    failure_threshold: int = 3
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_CHARS:
            raise ValueError(f"mcp server name {self.name!r}: letters, digits, '_' and '-' only")
        if self.transport == "stdio":
            if not self.command or not all(isinstance(part, str) for part in self.command):
                raise ValueError(f"mcp server {self.name!r}: stdio needs a command list")
        elif self.transport == "http":
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"mcp server {self.name!r}: http needs an http(s) url")
        else:
            raise ValueError(f"mcp server {self.name!r}: unknown transport {self.transport!r}")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError(f"mcp server {self.name!r}: timeouts must be positive")


class McpSource:
    """The tools of one MCP server; implements `ToolSource`."""

    def __init__(self, config: McpServerConfig, *, errlog: TextIO | None = None) -> None:
        self.config = config
        self.name = config.name
        self.breaker = CircuitBreaker(
            config.failure_threshold, config.cooldown_seconds, name=f"mcp:{config.name}"
        )
        self._errlog = errlog
        self._client: Any = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._open_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------- session

    async def _session(self) -> Any:
        if self._client is not None and self._owner is not None and not self._owner.done():
            return self._client
        async with self._open_lock:
            if self._client is not None and self._owner is not None and not self._owner.done():
                return self._client
            if self._closed:
                raise ToolError(f"mcp server {self.name!r} is closed")
            await self._drop()
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            stop = asyncio.Event()
            owner = asyncio.create_task(self._own(ready, stop), name=f"mcp-session:{self.name}")
            try:
                async with asyncio.timeout(self.config.connect_timeout):
                    client = await asyncio.shield(ready)
            except BaseException:
                stop.set()
                owner.cancel()
                with contextlib.suppress(BaseException):
                    await owner
                raise
            self._client, self._owner, self._stop = client, owner, stop
            return client

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Hold the SDK client's context open in this task until asked to stop."""
        from mcp import Client  # the SDK is slow to import: only servers' users pay for it

        try:
            async with AsyncExitStack() as stack:
                transport = await self._transport(stack)
                client = await stack.enter_async_context(Client(transport))
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ToolError(repr(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.info("mcp.session_ended", server=self.name, error=_describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _transport(self, stack: AsyncExitStack) -> Any:
        config = self.config
        if config.transport == "stdio":
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            params = StdioServerParameters(
                command=config.command[0],
                args=list(config.command[1:]),
                env=dict(config.env) or None,
                cwd=config.cwd,
            )
            return stdio_client(params, errlog=self._errlog or sys.stderr)
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = await stack.enter_async_context(
            create_mcp_http_client(headers=dict(config.headers) or None)
        )
        return streamable_http_client(config.url, http_client=http)

    async def _drop(self) -> None:
        """Close the current session (if any) and wait for its task, bounded."""
        owner, stop = self._owner, self._stop
        self._client = self._owner = self._stop = None
        if owner is None:
            return
        if stop is not None:
            stop.set()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(owner)
        except BaseException:
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def aclose(self) -> None:
        self._closed = True
        async with self._open_lock:
            await self._drop()

    # --------------------------------------------------------------- tools

    async def load(self) -> list[Tool]:
        """List the server's tools (all pages) as registry tools named ``<server>.<tool>``."""
        self.breaker.before_call()
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                client = await self._session()
                listed = []
                cursor = None
                for _ in range(100):
                    page = await client.list_tools(cursor=cursor)
                    listed.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except BaseException:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return [self._tool(remote) for remote in listed]

    def _tool(self, remote: Any) -> Tool:
        config = self.config
        name = remote.name

        async def handler(arguments: dict[str, Any]) -> Any:
            return await self.call(name, arguments)

        return Tool(
            id=f"{config.name}.{name}",
            handler=handler,
            name=getattr(remote, "title", None) or name,
            description=remote.description or "",
            input_schema=dict(remote.input_schema or {"type": "object"}),
            output_schema=dict(remote.output_schema) if remote.output_schema else None,
            required_permissions=config.required_permissions,
            # The call itself is bounded by config.timeout (a hang trips the breaker); this
            # outer bound also covers (re)starting the session.
            timeout=config.timeout + config.connect_timeout + 1.0,
            cost_per_call=config.cost_per_call,
            safety_level=config.safety_level,
            source=f"mcp:{config.name}",
        )

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call a tool; a dead session is dropped, server failures count on the breaker."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            self.breaker.before_call()
        except CircuitOpen as exc:
            raise ToolError(f"mcp server {self.name!r} is failing: {exc}") from None
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                client = await self._session()
        except asyncio.CancelledError:
            self.breaker.release_probe()
            raise
        except Exception as exc:
            self.breaker.record_failure()
            raise ToolError(f"mcp server {self.name!r} did not start: {_describe(exc)}") from None
        try:
            async with asyncio.timeout(self.config.timeout):
                result = await client.call_tool(name, arguments)
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                # It answered: the error is about this call, not the server's health.
                self.breaker.record_success()
                raise ToolError(f"mcp server {self.name!r}: {exc}"[:500]) from None
            await self._fail(client)
            raise ToolError(f"mcp server {self.name!r} closed the connection mid-call") from None
        except TimeoutError:
            # A hung call: the session stays (other calls may be fine), the breaker counts it.
            self.breaker.record_failure()
            raise TimeoutError(
                f"mcp tool {self.name}.{name} did not answer within {self.config.timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            self.breaker.release_probe()
            raise
        except Exception as exc:
            await self._fail(client)
            raise ToolError(f"mcp server {self.name!r} failed: {_describe(exc)}") from None
        self.breaker.record_success()
        if result.is_error:
            raise ToolError(f"{self.name}.{name}: {_text(result) or 'the tool failed'}"[:500])
        if result.structured_content is not None:
            return result.structured_content
        return _text(result)

    async def _fail(self, client: Any) -> None:
        self.breaker.record_failure()
        if self._client is client:
            async with self._open_lock:
                if self._client is client:
                    await self._drop()


def _text(result: Any) -> str:
    parts = []
    for block in result.content or ():
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    return "\n".join(parts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__
