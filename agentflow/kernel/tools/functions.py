"""Python callables as tools: the ``@tool(...)`` decorator.

The input schema is inferred from the type hints (pydantic) unless one is given, and so is
the output schema from the return annotation. Async functions are awaited; plain functions
run in a worker thread so a slow one cannot block the event loop and its timeout holds.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from agentflow.kernel.tools.base import PermissionLevel, SafetyLevel, Tool, ToolHandler
from agentflow.kernel.tools.ratelimit import RateLimit
from agentflow.kernel.tools.schemas import schemas_from_signature

__all__ = ["function_tool", "tool"]

_UNSET: Any = object()


def _handler(fn: Callable[..., Any]) -> ToolHandler:
    if inspect.iscoroutinefunction(fn):

        async def call_async(arguments: dict[str, Any]) -> Any:
            return await fn(**arguments)

        return call_async

    async def call_sync(arguments: dict[str, Any]) -> Any:
        return await asyncio.to_thread(functools.partial(fn, **arguments))

    return call_sync


def function_tool(
    fn: Callable[..., Any],
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
    output_schema: Mapping[str, Any] | None = _UNSET,
    required_permissions: PermissionLevel = "execute",
    timeout: float = 10.0,
    cost_per_call: Decimal | str | int = 0,
    rate_limit: str | RateLimit | None = None,
    safety_level: SafetyLevel = "safe",
) -> Tool:
    """A `Tool` calling ``fn(**arguments)``; see `tool` for the decorator form."""
    inferred_input, inferred_output = schemas_from_signature(fn)
    doc = inspect.getdoc(fn) or ""
    return Tool(
        id=id or fn.__name__,
        handler=_handler(fn),
        name=name or fn.__name__,
        description=description if description is not None else doc.strip(),
        input_schema=dict(input_schema) if input_schema is not None else inferred_input,
        output_schema=inferred_output if output_schema is _UNSET else output_schema,
        required_permissions=required_permissions,
        timeout=timeout,
        cost_per_call=Decimal(str(cost_per_call)),
        rate_limit=RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit,
        safety_level=safety_level,
        source="python",
    )


def tool(
    id: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Tool]:
    """Decorate a function to make it a `Tool` (register it with `ToolRegistry.register`).

    >>> @tool("orders.lookup", description="Find an order", rate_limit="100/hour")
    ... async def lookup(order_id: str) -> dict: ...
    """
    if callable(id):
        raise TypeError("use @tool() or @tool('tool.id', ...), not bare @tool")

    def decorate(fn: Callable[..., Any]) -> Tool:
        return function_tool(fn, id=id, **options)

    return decorate
