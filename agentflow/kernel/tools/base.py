"""What a tool is, who calls it, and what a call comes back as (SPEC 4.9).

A `Tool` is a description (id, schemas, permissions, limits, safety level) plus an async
``handler(arguments) -> output``. The registry never trusts either side of the handler:
arguments are validated before it runs and its output after; text output is fenced as
untrusted data. `ToolCaller` is everything the registry needs to decide whether a call may
run: the agent's grants, the caller's governance level per tool, the tenant's policy on
``dangerous`` tools and, for an approved call, who approved it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, get_args

from agentflow.kernel.tools.ratelimit import RateLimit
from agentflow.kernel.tools.schemas import check_schema

__all__ = [
    "APPROVER_ROLES",
    "PERMISSION_LEVELS",
    "SAFETY_LEVELS",
    "OutcomeStatus",
    "PermissionLevel",
    "SafetyLevel",
    "Tool",
    "ToolCaller",
    "ToolError",
    "ToolGrant",
    "ToolHandler",
    "ToolOutcome",
    "ToolView",
    "level_allows",
    "new_call_id",
    "parse_grants",
]

SafetyLevel = Literal["safe", "requires_confirmation", "dangerous"]
PermissionLevel = Literal["none", "read", "execute", "admin"]
OutcomeStatus = Literal[
    "ok",
    "error",
    "timeout",
    "denied",
    "invalid_arguments",
    "invalid_output",
    "needs_approval",
    "rate_limited",
    "unknown_tool",
]

SAFETY_LEVELS: tuple[SafetyLevel, ...] = get_args(SafetyLevel)
# Governance levels, lowest first: a level includes every level before it.
PERMISSION_LEVELS: tuple[PermissionLevel, ...] = get_args(PermissionLevel)
# Who may approve a `dangerous` call (a reviewer may approve `requires_confirmation` ones).
APPROVER_ROLES = frozenset({"operator", "owner"})

ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class ToolError(Exception):
    """A tool's own failure, with a message safe to show (no traceback, no secrets)."""


def level_allows(level: str, needed: str) -> bool:
    """Whether governance ``level`` includes ``needed`` (unknown levels allow nothing)."""
    if level not in PERMISSION_LEVELS or needed not in PERMISSION_LEVELS:
        return False
    return PERMISSION_LEVELS.index(level) >= PERMISSION_LEVELS.index(needed)


def new_call_id() -> str:
    return uuid.uuid4().hex


def _check_id(tool_id: str) -> None:
    if not tool_id or any(ch.isspace() for ch in tool_id) or len(tool_id) > 200:
        raise ValueError(f"tool id {tool_id!r} must be 1-200 characters without whitespace")


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable capability with a contract.

    ``required_permissions`` is the governance level a caller needs (read, execute or admin);
    ``timeout`` bounds one call in seconds; ``rate_limit`` is ``"N/second|minute|hour|day"``;
    ``output_schema`` of None means any JSON-able output is accepted.
    """

    id: str
    handler: ToolHandler = field(repr=False, compare=False)
    name: str = ""
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    output_schema: Mapping[str, Any] | None = None
    required_permissions: PermissionLevel = "execute"
    timeout: float = 10.0
    cost_per_call: Decimal = Decimal(0)
    rate_limit: RateLimit | None = None
    safety_level: SafetyLevel = "safe"
    source: str = "python"

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not self.name:
            object.__setattr__(self, "name", self.id)
        if self.required_permissions not in ("read", "execute", "admin"):
            raise ValueError(
                f"tool {self.id!r}: required_permissions must be read, execute or admin, "
                f"not {self.required_permissions!r}"
            )
        if self.safety_level not in SAFETY_LEVELS:
            raise ValueError(f"tool {self.id!r}: unknown safety_level {self.safety_level!r}")
        if not (self.timeout > 0):
            raise ValueError(f"tool {self.id!r}: timeout must be positive")
        cost = Decimal(str(self.cost_per_call))
        if cost < 0:
            raise ValueError(f"tool {self.id!r}: cost_per_call cannot be negative")
        object.__setattr__(self, "cost_per_call", cost)
        if isinstance(self.rate_limit, str):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        check_schema(self.input_schema, f"tool {self.id!r} input_schema")
        if self.input_schema.get("type", "object") != "object":
            raise ValueError(f"tool {self.id!r}: input_schema must describe an object")
        if self.output_schema is not None:
            check_schema(self.output_schema, f"tool {self.id!r} output_schema")


@dataclass(frozen=True, slots=True)
class ToolGrant:
    """One entry of an agent's ``tools`` config: the tool and, optionally, its safety level
    for this agent (an MCP tool lowered to ``safe``, a Python tool raised to confirmation)
    and its price per call for this agent (an MCP server declares none; a paid API does)."""

    tool_id: str
    safety_level: SafetyLevel | None = None
    cost_per_call: Decimal | None = None

    def __post_init__(self) -> None:
        _check_id(self.tool_id)
        if self.safety_level is not None and self.safety_level not in SAFETY_LEVELS:
            raise ValueError(f"tool {self.tool_id!r}: unknown safety_level {self.safety_level!r}")
        if self.cost_per_call is not None:
            cost = _price(self.cost_per_call)
            if cost is None:
                raise ValueError(
                    f"tool {self.tool_id!r}: cost_per_call must be a number of dollars >= 0"
                )
            object.__setattr__(self, "cost_per_call", cost)


def _price(value: Any) -> Decimal | None:
    """A non-negative, finite price in dollars, or None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        price = Decimal(str(value))
    except ArithmeticError:
        return None
    return price if price.is_finite() and price >= 0 else None


def parse_grants(entries: Iterable[str | Mapping[str, Any]]) -> dict[str, ToolGrant]:
    """``["id" | {"id": ..., "safety_level": ...}]`` → grants by id (ValueError names the entry)."""
    grants: dict[str, ToolGrant] = {}
    for index, entry in enumerate(entries):
        if isinstance(entry, str):
            grant = ToolGrant(entry)
        elif isinstance(entry, Mapping):
            unknown = set(entry) - {"id", "safety_level", "cost_per_call"}
            if unknown:
                raise ValueError(f"tools[{index}]: unknown keys {sorted(unknown)}")
            if not isinstance(entry.get("id"), str):
                raise ValueError(f"tools[{index}].id: a tool id (string) is required")
            try:
                grant = ToolGrant(
                    entry["id"], entry.get("safety_level"), entry.get("cost_per_call")
                )
            except ValueError as exc:
                raise ValueError(f"tools[{index}]: {exc}") from None
        else:
            raise ValueError(
                f"tools[{index}]: a tool id or {{'id': ..., 'safety_level': ..., "
                "'cost_per_call': ...}}"
            )
        if grant.tool_id in grants:
            raise ValueError(f"tools[{index}]: {grant.tool_id!r} is granted twice")
        grants[grant.tool_id] = grant
    return grants


@dataclass(frozen=True, slots=True)
class ToolCaller:
    """Who is calling: deny by default, everything must be granted explicitly.

    ``grants``: the agent config's tools; ``levels``: the governance level of the calling role
    per tool id (as `governance.services.effective_tool_permissions` returns it; a missing
    tool is ``none``); ``allow_dangerous``: the tenant's policy; ``approver_role``: the role of
    whoever approved this call (checked for ``dangerous`` tools).
    """

    grants: Mapping[str, ToolGrant] = field(default_factory=dict)
    levels: Mapping[str, str] = field(default_factory=dict)
    allow_dangerous: bool = False
    approver_role: str | None = None
    tenant_id: str = ""
    agent_id: str = ""

    @classmethod
    def of(
        cls,
        tools: Iterable[str | Mapping[str, Any]],
        levels: Mapping[str, str] | str,
        **kwargs: Any,
    ) -> ToolCaller:
        """Build from an agent's ``tools`` config and either a per-tool level map or one level
        for every granted tool."""
        grants = parse_grants(tools)
        level_map = dict.fromkeys(grants, levels) if isinstance(levels, str) else dict(levels)
        return cls(grants=grants, levels=level_map, **kwargs)

    def level_for(self, tool_id: str) -> str:
        return self.levels.get(tool_id, "none")


@dataclass(frozen=True, slots=True)
class ToolView:
    """What a caller sees of a tool (GET /agents/{id}/tools)."""

    id: str
    name: str
    description: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any] | None
    safety_level: SafetyLevel
    required_permissions: PermissionLevel
    granted: bool
    level: str
    can_call: bool
    source: str


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one call; `invoke` never raises, every failure is a status."""

    tool_id: str
    status: OutcomeStatus
    output: Any = None
    error: str | None = None
    duration_ms: float = 0.0
    cost_usd: Decimal = Decimal(0)
    call_id: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"
