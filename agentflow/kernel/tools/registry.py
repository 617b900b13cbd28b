"""The tool registry: deny by default, validate both ways, never raise (SPEC 4.9).

`invoke` decides in a fixed order, and nothing past a refusal runs:

1. the tool exists (``unknown_tool``);
2. the caller's agent grants it and the caller's governance level covers the tool's
   ``required_permissions``; a ``dangerous`` tool also needs the tenant's permission
   (``denied``);
3. the arguments match the input schema (``invalid_arguments``, naming the field);
4. a ``requires_confirmation`` or ``dangerous`` call without approval is proposed, not run
   (``needs_approval``); a ``dangerous`` one approved by anyone but an operator or owner is
   ``denied``;
5. the rate limit admits it (``rate_limited``);
6. the handler runs under the tool's timeout (``timeout``, ``error``);
7. the output matches the output schema (``invalid_output``) and is fenced as untrusted.

A call's ``call_id`` is its idempotency key: while the registry remembers it, invoking the
same id again (two concurrent approvals, a retry) returns the first execution's outcome
instead of running the tool twice. The platform persists the key to get the same guarantee
across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import structlog
from jsonschema import Draft202012Validator

from agentflow.kernel.tools.base import (
    APPROVER_ROLES,
    OutcomeStatus,
    SafetyLevel,
    Tool,
    ToolCaller,
    ToolError,
    ToolOutcome,
    ToolView,
    level_allows,
    new_call_id,
)
from agentflow.kernel.tools.fencing import fence_output
from agentflow.kernel.tools.ratelimit import InMemoryRateLimiter, RateLimiter
from agentflow.kernel.tools.schemas import compile_schema, schema_error

__all__ = ["ToolRegistry", "ToolSource"]

log = structlog.get_logger(__name__)

_ERROR_CHARS = 500


@runtime_checkable
class ToolSource(Protocol):
    """A provider of tools discovered at load time (an MCP server, a plugin, ...)."""

    name: str

    async def load(self) -> list[Tool]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    tool: Tool
    input_validator: Draft202012Validator
    output_validator: Draft202012Validator | None


class ToolRegistry:
    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        sources: Iterable[ToolSource] = (),
        rate_limiter: RateLimiter | None = None,
        remember_calls: int = 10_000,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._sources: list[ToolSource] = []
        self._pending: list[ToolSource] = []
        self._load_lock = asyncio.Lock()
        self.rate_limiter: RateLimiter = rate_limiter or InMemoryRateLimiter()
        self._remember_calls = remember_calls
        self._calls: OrderedDict[str, tuple[str, asyncio.Future[ToolOutcome]]] = OrderedDict()
        for tool in tools:
            self.register(tool)
        for source in sources:
            self.add_source(source)

    # ----------------------------------------------------------------- contents

    def register(self, tool: Tool) -> Tool:
        """Add a tool; its schemas were checked when the `Tool` was built."""
        if tool.id in self._entries:
            raise ValueError(f"tool {tool.id!r} is already registered")
        output = None if tool.output_schema is None else compile_schema(tool.output_schema)
        self._entries[tool.id] = _Entry(tool, compile_schema(tool.input_schema), output)
        return tool

    def add_source(self, source: ToolSource) -> None:
        if any(existing.name == source.name for existing in self._sources):
            raise ValueError(f"a tool source named {source.name!r} is already added")
        self._sources.append(source)
        self._pending.append(source)

    async def load(self) -> list[str]:
        """Load the tools of every source not loaded yet; returns the errors (one per source).

        A source that fails to load (a server that does not start) is reported and retried
        on the next `load`; the others' tools are registered.
        """
        errors: list[str] = []
        async with self._load_lock:
            pending, self._pending = self._pending, []
            results = await asyncio.gather(
                *(source.load() for source in pending), return_exceptions=True
            )
            for source, result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    errors.append(f"{source.name}: {_describe(result)}")
                    self._pending.append(source)
                    log.warning("tools.source_failed", source=source.name, error=errors[-1])
                    continue
                for tool in result:
                    if tool.id in self._entries:
                        errors.append(f"{source.name}: tool {tool.id!r} is already registered")
                        continue
                    self.register(tool)
        return errors

    def get(self, tool_id: str) -> Tool | None:
        entry = self._entries.get(tool_id)
        return None if entry is None else entry.tool

    @property
    def tools(self) -> list[Tool]:
        return [entry.tool for entry in self._entries.values()]

    def __contains__(self, tool_id: object) -> bool:
        return tool_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        for source in self._sources:
            try:
                await source.aclose()
            except Exception as exc:  # closing one source must not leak the others
                log.warning("tools.source_close_failed", source=source.name, error=_describe(exc))

    # ------------------------------------------------------------------ policy

    @staticmethod
    def safety_level(tool: Tool, caller: ToolCaller) -> SafetyLevel:
        """The tool's level for this caller: the grant may set it, but never below
        ``dangerous`` for a tool its author marked dangerous."""
        grant = caller.grants.get(tool.id)
        if grant is None or grant.safety_level is None or tool.safety_level == "dangerous":
            return tool.safety_level
        return grant.safety_level

    @staticmethod
    def price(tool: Tool, caller: ToolCaller) -> Decimal:
        """What one call costs this caller: its grant's price when it sets one, else the
        tool's own."""
        grant = caller.grants.get(tool.id)
        if grant is not None and grant.cost_per_call is not None:
            return grant.cost_per_call
        return tool.cost_per_call

    def _refusal(self, tool: Tool, caller: ToolCaller) -> str | None:
        if tool.id not in caller.grants:
            return f"tool {tool.id!r} is not granted to this agent"
        level = caller.level_for(tool.id)
        if not level_allows(level, tool.required_permissions):
            return (
                f"tool {tool.id!r} needs {tool.required_permissions!r} permission; "
                f"the caller has {level!r}"
            )
        if self.safety_level(tool, caller) == "dangerous" and not caller.allow_dangerous:
            return f"tool {tool.id!r} is dangerous and the tenant's policy does not allow it"
        return None

    def visible_tools(self, caller: ToolCaller) -> list[ToolView]:
        """Every registered tool, with whether this caller is granted it and at which level."""
        views = []
        for entry in self._entries.values():
            tool = entry.tool
            level = caller.level_for(tool.id)
            views.append(
                ToolView(
                    id=tool.id,
                    name=tool.name,
                    description=tool.description,
                    input_schema=tool.input_schema,
                    output_schema=tool.output_schema,
                    safety_level=self.safety_level(tool, caller),
                    required_permissions=tool.required_permissions,
                    granted=tool.id in caller.grants,
                    level=level,
                    can_call=self._refusal(tool, caller) is None,
                    source=tool.source,
                )
            )
        return views

    # ------------------------------------------------------------------- calls

    async def invoke(
        self,
        tool_id: str,
        arguments: dict[str, Any],
        *,
        caller: ToolCaller,
        call_id: str | None = None,
        approved: bool = False,
    ) -> ToolOutcome:
        """Run one call if policy allows it; every failure is an outcome, never an exception."""
        given_id = call_id is not None
        call_id = call_id or new_call_id()
        entry = self._entries.get(tool_id)
        if entry is None and self._pending:
            await self.load()
            entry = self._entries.get(tool_id)
        if entry is None:
            return ToolOutcome(
                tool_id, "unknown_tool", error=f"no tool {tool_id!r}", call_id=call_id
            )
        tool = entry.tool
        refusal = self._refusal(tool, caller)
        if refusal is not None:
            return ToolOutcome(tool_id, "denied", error=refusal, call_id=call_id)
        if not isinstance(arguments, Mapping):
            return ToolOutcome(
                tool_id,
                "invalid_arguments",
                error="arguments $: must be an object",
                call_id=call_id,
            )
        problem = schema_error(arguments, entry.input_validator, "arguments")
        if problem is not None:
            return ToolOutcome(tool_id, "invalid_arguments", error=problem, call_id=call_id)
        safety = self.safety_level(tool, caller)
        if safety != "safe" and not approved:
            return ToolOutcome(
                tool_id,
                "needs_approval",
                error=f"tool {tool_id!r} is {safety}: the call needs a human's approval",
                call_id=call_id,
            )
        if safety == "dangerous" and caller.approver_role not in APPROVER_ROLES:
            return ToolOutcome(
                tool_id,
                "denied",
                error=f"tool {tool_id!r} is dangerous: only an operator or owner may approve it",
                call_id=call_id,
            )
        if not given_id:
            return await self._execute(entry, dict(arguments), caller, call_id)
        return await self._execute_once(entry, dict(arguments), caller, call_id)

    async def _execute_once(
        self, entry: _Entry, arguments: dict[str, Any], caller: ToolCaller, call_id: str
    ) -> ToolOutcome:
        known = self._calls.get(call_id)
        if known is not None:
            known_tool, earlier = known
            if known_tool != entry.tool.id:
                return ToolOutcome(
                    entry.tool.id,
                    "error",
                    error=f"call id {call_id!r} was already used for tool {known_tool!r}",
                    call_id=call_id,
                )
            return await asyncio.shield(earlier)
        future: asyncio.Future[ToolOutcome] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = (entry.tool.id, future)
        while len(self._calls) > self._remember_calls:
            self._calls.popitem(last=False)
        try:
            outcome = await self._execute(entry, arguments, caller, call_id)
        except BaseException:
            # Cancelled before an outcome: forget the id so the call can be made again.
            self._calls.pop(call_id, None)
            future.cancel()
            raise
        future.set_result(outcome)
        return outcome

    async def _execute(
        self, entry: _Entry, arguments: dict[str, Any], caller: ToolCaller, call_id: str
    ) -> ToolOutcome:
        tool = entry.tool
        if tool.rate_limit is not None:
            key = f"{caller.tenant_id}:{tool.id}"
            retry_after = await self.rate_limiter.acquire(key, tool.rate_limit)
            if retry_after is not None:
                return ToolOutcome(
                    tool.id,
                    "rate_limited",
                    error=f"rate limit {tool.rate_limit} reached; retry in {retry_after:.1f}s",
                    call_id=call_id,
                )
        started = time.perf_counter()
        status: OutcomeStatus = "ok"
        error: str | None = None
        output: Any = None
        try:
            async with asyncio.timeout(tool.timeout):
                raw = await tool.handler(arguments)
        except TimeoutError as exc:
            status = "timeout"
            error = str(exc) or f"tool {tool.id!r} did not answer within {tool.timeout:g}s"
        except ToolError as exc:
            status, error = "error", str(exc)[:_ERROR_CHARS] or type(exc).__name__
        except Exception as exc:  # a tool's bug is an outcome, never a failed run
            status, error = "error", _describe(exc)
            log.warning("tools.call_failed", tool=tool.id, error=error)
        else:
            if entry.output_validator is not None:
                error = schema_error(raw, entry.output_validator, "output")
            if error is not None:
                status = "invalid_output"
            else:
                output = fence_output(raw, f"tool {tool.id}")
        duration_ms = (time.perf_counter() - started) * 1000
        return ToolOutcome(
            tool.id,
            status,
            output=output,
            error=error,
            duration_ms=duration_ms,
            cost_usd=self.price(tool, caller),
            call_id=call_id,
        )

    async def invoke_many(
        self,
        calls: Sequence[tuple[str, dict[str, Any]]],
        *,
        caller: ToolCaller,
    ) -> list[ToolOutcome]:
        """Run one step's calls concurrently, each under its own tool's timeout; outcomes
        come back in the order of ``calls``."""
        if not calls:
            return []
        if len(calls) == 1:
            tool_id, arguments = calls[0]
            return [await self.invoke(tool_id, arguments, caller=caller)]
        return list(
            await asyncio.gather(
                *(self.invoke(tool_id, arguments, caller=caller) for tool_id, arguments in calls)
            )
        )


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:_ERROR_CHARS]
