"""Agents' tools on the platform: registries, callers, rate limits and recorded calls.

The kernel's `ToolRegistry` decides every call (deny by default, schemas both ways, fencing);
this module gives it what only the platform knows:

- the tools an agent can see: its config's MCP servers plus every registered tool source
  (`register_tool_source`: built-in tools plug in here), in a registry built once per
  (agent, version) per event loop and reused (MCP sessions stay open between calls; an
  evicted registry closes them);
- who is calling (`tool_caller`): the config's grants and the governance level of the
  calling role (`governance.services.effective_tool_permissions`). A run calls as the
  config's ``tool_role`` (default ``operator``, whose ceiling is ``execute``); an operator's
  "try this tool" calls as their own role (an API key as ``operator``);
- rate limits per tenant and tool in Redis (`RedisRateLimiter`), exact across workers;
- the `ToolCall` rows: arguments and results redacted by the agent's guardrails, results
  bounded, each call audited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from agentflow.builtin_tools import BuiltinToolContext, BuiltinToolSettings, builtin_tools
from agentflow.core import worker_loop
from agentflow.core.conf import setting_float, setting_int
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.planning.runtime import CURRENT_NODE
from agentflow.kernel.tools import (
    APPROVER_ROLES,
    RateLimit,
    Tool,
    ToolCaller,
    ToolOutcome,
    ToolRegistry,
    ToolSource,
    ToolView,
    parse_grants,
)
from agentflow.kernel.tools.mcp import McpServerConfig, McpSource
from agentflow.kernel.tools.schemas import compile_schema, schema_error
from agentflow.models import Agent, ToolCall, ToolCallStatus
from agentflow.pipelines import validate_agent_config
from governance.audit import Actor, append
from governance.services import effective_tool_permissions
from tenants.context import tenant_scope

__all__ = [
    "RedisRateLimiter",
    "RunToolInvoker",
    "ToolArgumentsInvalid",
    "ToolContext",
    "ToolDenied",
    "ToolFactory",
    "ToolInvocationError",
    "ToolNeedsApproval",
    "ToolNotFound",
    "ToolRateLimited",
    "agent_tools",
    "clear_registry_cache",
    "clear_tool_sources",
    "evict_registry",
    "get_registry",
    "invoke_as_operator",
    "record_call",
    "register_tool_source",
    "tool_caller",
    "tool_costs",
]

log = structlog.get_logger(__name__)

# An API key is the tenant's machine credential: it tries tools as an operator would.
API_KEY_ROLE = "operator"
# The outcomes that ran the tool (and are recorded); the others refused before it ran.
_EXECUTED = frozenset({"ok", "error", "timeout", "invalid_output"})


# --------------------------------------------------------------------- tool sources


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool factory knows of the agent whose registry it fills."""

    tenant_id: int
    agent_id: str
    config: Mapping[str, Any]


ToolFactory = Callable[[ToolContext], Iterable[Tool]]
_factories: list[ToolFactory] = []


def register_tool_source(factory: ToolFactory) -> None:
    """Add tools to every agent's registry: ``factory(ctx) -> [Tool]`` runs at each build.

    The seam for built-in tools (``agentflow.builtin_tools.builtin_tools``) and plugins;
    register at app start-up (AppConfig.ready). A tool is visible to every agent but callable
    only by those whose config grants it (and whose role's level allows it).
    """
    if factory not in _factories:
        _factories.append(factory)


def clear_tool_sources() -> None:
    _factories.clear()


# ------------------------------------------------------------------- rate limiting

_RATE_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0
"""


class RedisRateLimiter:
    """The kernel `RateLimiter` on a fixed window per key in Redis.

    One Lua script counts and checks atomically, so N concurrent calls against a limit of
    L admit exactly L in a window, across every worker. While Redis is unreachable calls are
    refused (``retry_after`` 1 s): a tool's limit protects someone else's API or money.
    """

    def __init__(self, url: str | None = None, *, prefix: str = "agentflow:tool-rate") -> None:
        self._url = url or settings.REDIS_URL
        self._prefix = prefix
        self._client: redis.Redis | None = None
        self._script: Any = None
        self._lock = threading.Lock()

    def _script_fn(self) -> Any:
        with self._lock:
            if self._script is None:
                self._client = redis.Redis.from_url(self._url, socket_timeout=2)
                self._script = self._client.register_script(_RATE_SCRIPT)
            return self._script

    def try_acquire(self, key: str, limit: RateLimit) -> float | None:
        window = int(time.time() // limit.period_seconds)
        name = f"{self._prefix}:{key}:{limit.period_seconds}:{window}"
        try:
            wait = int(self._script_fn()(keys=[name], args=[limit.count, limit.period_seconds]))
        except redis.RedisError as exc:
            log.warning("tools.rate_limit_unavailable", error=f"{type(exc).__name__}: {exc}")
            return 1.0
        return None if wait == 0 else float(wait)

    async def acquire(self, key: str, limit: RateLimit) -> float | None:
        # A round trip to Redis: off the event loop, which serves every run of the worker.
        return await asyncio.to_thread(self.try_acquire, key, limit)


_rate_limiter: RedisRateLimiter | None = None


def _shared_rate_limiter() -> RedisRateLimiter:
    global _rate_limiter
    if _rate_limiter is None:
        _rate_limiter = RedisRateLimiter()
    return _rate_limiter


# ------------------------------------------------------------------------ registries


def _resolve_env(values: Mapping[str, str]) -> dict[str, str]:
    """``${VAR}`` values (validated against MCP_SECRET_ENV_VARS on save) from the server's
    environment; anything else as written."""
    resolved = {}
    for name, value in values.items():
        if value.startswith("${") and value.endswith("}"):
            value = os.environ.get(value[2:-1], "")
        resolved[name] = value
    return resolved


def _mcp_source(entry: Mapping[str, Any]) -> McpSource:
    config = McpServerConfig(
        name=entry["name"],
        transport=entry["transport"],
        command=tuple(entry.get("command") or ()),
        env=_resolve_env(entry.get("env") or {}),
        url=entry.get("url") or "",
        headers=_resolve_env(entry.get("headers") or {}),
        timeout=float(entry.get("timeout_seconds", 30.0)),
        connect_timeout=setting_float("MCP_CONNECT_TIMEOUT_SECONDS"),
    )
    # The server's stderr goes to the process's real one: a Celery worker replaces
    # sys.stderr with a logging proxy that has no file descriptor for a subprocess.
    return McpSource(config, errlog=sys.__stderr__)


def _source_tools(ctx: ToolContext) -> list[Tool]:
    """The built-in tools the agent's ``tool_settings`` configure, then the registered ones."""
    options = BuiltinToolSettings.model_validate(ctx.config.get("tool_settings") or {})
    builtins = builtin_tools(BuiltinToolContext(ctx.tenant_id, ctx.agent_id, options))
    return [*builtins, *(tool for factory in list(_factories) for tool in factory(ctx))]


async def build_registry(ctx: ToolContext) -> ToolRegistry:
    """A new registry with the sources' tools and the config's MCP servers, loaded."""
    tools = _source_tools(ctx)
    # (Only the support agent's config has MCP servers; the other blueprints' grant tools.)
    servers = ctx.config.get("mcp_servers") or ()
    sources: list[ToolSource] = [_mcp_source(entry) for entry in servers]
    registry = ToolRegistry(tools, sources=sources, rate_limiter=_shared_rate_limiter())
    errors = await registry.load()
    for error in errors:
        # A server that did not start is retried by the next call's `load`.
        log.warning("tools.source_unavailable", agent=ctx.agent_id, error=error)
    return registry


@dataclass(slots=True)
class _Slot:
    registry: ToolRegistry
    loop: weakref.ref[asyncio.AbstractEventLoop]


def _close_on_its_loop(slot: _Slot) -> concurrent.futures.Future[None] | None:
    """Close a registry's sources (MCP sessions, subprocesses) on the loop they live on."""
    loop = slot.loop()
    if loop is None or loop.is_closed():
        return None
    try:
        return asyncio.run_coroutine_threadsafe(slot.registry.aclose(), loop)
    except RuntimeError:  # the loop stopped meanwhile: its sessions went with it
        log.info("tools.registry_close_skipped")
        return None


class _RegistryCache:
    """Built registries per (agent, version, loop): MCP sessions belong to their loop."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int, int], _Slot] = OrderedDict()
        self._building: dict[tuple[str, int, int], asyncio.Future[ToolRegistry]] = {}
        self._lock = threading.Lock()

    async def get(self, ctx: ToolContext, version: int) -> ToolRegistry:
        loop = asyncio.get_running_loop()
        key = (ctx.agent_id, version, id(loop))
        with self._lock:
            slot = self._items.get(key)
            if slot is not None and slot.loop() is loop:
                self._items.move_to_end(key)
                return slot.registry
            pending = self._building.get(key)
            if pending is None or pending.get_loop() is not loop:
                pending = None
                self._building[key] = loop.create_future()
        if pending is not None:
            return await asyncio.shield(pending)
        return await self._build(ctx, key, loop)

    async def _build(
        self, ctx: ToolContext, key: tuple[str, int, int], loop: asyncio.AbstractEventLoop
    ) -> ToolRegistry:
        future = self._building[key]
        try:
            registry = await build_registry(ctx)
        except BaseException as exc:
            with self._lock:
                self._building.pop(key, None)
            if not isinstance(exc, asyncio.CancelledError):
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
            else:
                future.cancel()
            raise
        evicted: list[_Slot] = []
        with self._lock:
            self._building.pop(key, None)
            stale = [k for k in self._items if k[0] == key[0] and k[1] < key[1]]
            evicted += [self._items.pop(k) for k in stale]
            self._items[key] = _Slot(registry, weakref.ref(loop))
            while len(self._items) > self.size:
                evicted.append(self._items.popitem(last=False)[1])
        for slot in evicted:
            _close_on_its_loop(slot)
        future.set_result(registry)
        return registry

    def evict(self, agent_id: str | None = None) -> list[concurrent.futures.Future[None]]:
        with self._lock:
            keys = [k for k in self._items if agent_id is None or k[0] == agent_id]
            evicted = [self._items.pop(k) for k in keys]
        closing = [_close_on_its_loop(slot) for slot in evicted]
        return [future for future in closing if future is not None]


_cache = _RegistryCache(int(getattr(settings, "AGENTFLOW", {}).get("PIPELINE_CACHE_SIZE", 64)))


def _context(agent: Agent, config: Mapping[str, Any]) -> ToolContext:
    return ToolContext(tenant_id=agent.tenant_id, agent_id=str(agent.pk), config=config)


async def get_registry(agent: Agent, config: Mapping[str, Any]) -> ToolRegistry:
    """The agent's registry (``config``: its validated config), built once per version."""
    return await _cache.get(_context(agent, config), int(agent.version))


def tool_costs(agent: Agent, config: Mapping[str, Any]) -> dict[str, float]:
    """Prices of the granted tools, for the cost preflight: a grant's own ``cost_per_call``
    (MCP tools are priced only so), else the registered source's price. Empty, without
    building anything, when the config grants none."""
    grants = parse_grants(config.get("tools") or ())
    if not grants:
        return {}
    granted = set(grants)
    priced = {
        tool_id: float(grant.cost_per_call)
        for tool_id, grant in grants.items()
        if grant.cost_per_call is not None
    }
    # Building the sources' tools costs milliseconds (their schemas are compiled) and every
    # run's preflight asks: once per agent version per process (a config change bumps it).
    key = (str(agent.pk), int(agent.version))
    with _costs_lock:
        known = _costs.get(key)
    if known is not None:
        return dict(known)
    ctx = _context(agent, config)
    costs = {
        tool.id: float(tool.cost_per_call)
        for tool in _source_tools(ctx)
        if tool.id in granted and tool.cost_per_call
    }
    costs.update(priced)
    with _costs_lock:
        _costs[key] = costs
        while len(_costs) > _COSTS_SIZE:
            _costs.popitem(last=False)
    return dict(costs)


_COSTS_SIZE = 256
_costs: OrderedDict[tuple[str, int], dict[str, float]] = OrderedDict()
_costs_lock = threading.Lock()


def _forget_costs(agent_id: str | None = None) -> None:
    with _costs_lock:
        for key in [k for k in _costs if agent_id is None or k[0] == agent_id]:
            del _costs[key]


def evict_registry(agent_id: object) -> None:
    """Close and forget an agent's registries (deleted, or changed without a version bump)."""
    _cache.evict(str(agent_id))
    _forget_costs(str(agent_id))


def clear_registry_cache(wait_seconds: float = 0.0) -> None:
    """Close and forget every registry; wait up to ``wait_seconds`` for them to close."""
    _forget_costs()
    closing = _cache.evict()
    if wait_seconds > 0 and closing:
        concurrent.futures.wait(closing, timeout=wait_seconds)


# --------------------------------------------------------------------------- callers


def tool_caller(
    agent: Agent,
    config: Mapping[str, Any],
    role: str,
    *,
    approver_role: str | None = None,
) -> ToolCaller:
    """Who calls: the config's grants, ``role``'s governance level for each (one query),
    and the tenant's policy on ``dangerous`` tools (``preferences.allow_dangerous_tools``)."""
    grants = parse_grants(config["tools"])
    levels = effective_tool_permissions(agent, role, grants) if grants else {}
    return ToolCaller(
        grants=grants,
        levels=levels,
        allow_dangerous=bool(agent.tenant.preferences.get("allow_dangerous_tools", False)),
        approver_role=approver_role,
        tenant_id=str(agent.tenant_id),
        agent_id=str(agent.pk),
    )


def agent_tools(agent: Agent, role: str) -> list[ToolView]:
    """Every tool ``agent`` can see, with whether it is granted and at ``role``'s level."""
    config = validate_agent_config(agent.blueprint, agent.config)
    caller = tool_caller(agent, config, role)
    registry = worker_loop.run(get_registry(agent, config))
    return registry.visible_tools(caller)


# ----------------------------------------------------------------------------- calls


class ToolInvocationError(Exception):
    """A call refused before the tool ran (nothing is recorded)."""


class ToolNotFound(ToolInvocationError):
    """No tool of that id in the agent's registry (404)."""


class ToolDenied(ToolInvocationError):
    """Not granted, or above the caller's level (403)."""


class ToolNeedsApproval(ToolInvocationError):
    """The call is valid and allowed but needs a human's approval: ``proposal`` holds what
    `agentflow.services.propose_tool_action` needs to queue it."""

    proposal: dict[str, Any] | None = None


class ToolRateLimited(ToolInvocationError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ToolArgumentsInvalid(ToolInvocationError):
    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.fields = fields


def _argument_fields(error: str) -> dict[str, list[str]]:
    """``"arguments $.a.b: msg; $.c: msg"`` (the registry's message) by field path."""
    fields: dict[str, list[str]] = {}
    for part in error.removeprefix("arguments ").split("; $"):
        path, _, reason = part.partition(": ")
        path = "arguments" + path.lstrip("$")
        fields.setdefault(path, []).append(reason or error)
    return fields


def _refusal(outcome: ToolOutcome) -> ToolInvocationError | None:
    error = outcome.error or outcome.status
    if outcome.status == "unknown_tool":
        return ToolNotFound(error)
    if outcome.status == "denied":
        return ToolDenied(error)
    if outcome.status == "invalid_arguments":
        return ToolArgumentsInvalid(error, _argument_fields(error))
    if outcome.status == "needs_approval":
        return ToolNeedsApproval(error)
    if outcome.status == "rate_limited":
        seconds = error.rsplit("retry in ", 1)[-1].rstrip("s")
        try:
            retry_after = max(1, round(float(seconds)))
        except ValueError:
            retry_after = 1
        return ToolRateLimited(error, retry_after)
    return None


_redactor = PIIRedactor()


def _redacted(value: Any, config: Mapping[str, Any]) -> Any:
    """PII out of what is stored, unless the agent's guardrails turned redaction off."""
    if value is None or not (config.get("guardrails") or {}).get("redact_pii", True):
        return value
    return _redactor.redact_mapping(value)


def _bounded(value: Any) -> Any:
    """A stored result: at most TOOL_RESULT_MAX_CHARS of JSON, else a marked preview."""
    limit = setting_int("TOOL_RESULT_MAX_CHARS")
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= limit:
        return json.loads(text)
    return {"truncated": True, "chars": len(text), "preview": text[:limit]}


def record_call(
    *,
    agent: Agent,
    config: Mapping[str, Any],
    outcome: ToolOutcome,
    arguments: Mapping[str, Any],
    actor: Actor,
    run_id: Any = None,
    step: str = "",
) -> ToolCall:
    """Persist one executed call and audit it, in one transaction."""
    awaiting = outcome.status == "needs_approval"
    status = (
        ToolCallStatus.AWAITING_APPROVAL
        if awaiting
        else (outcome.status if outcome.status in ToolCallStatus.values else ToolCallStatus.ERROR)
    )
    with transaction.atomic():
        call = ToolCall.objects.create(
            tenant_id=agent.tenant_id,
            agent=agent,
            run_id=run_id,
            step=step[:100],
            tool=outcome.tool_id,
            arguments=_redacted(dict(arguments), config),
            pending_arguments=dict(arguments) if awaiting else None,
            result=_bounded(_redacted(outcome.output, config)),
            status=status,
            error="" if awaiting else (outcome.error or "")[:2000],
            duration_ms=outcome.duration_ms,
            cost_usd=Decimal(outcome.cost_usd),
            idempotency_key=outcome.call_id or uuid.uuid4().hex,
            actor="run" if run_id is not None else f"{actor.type}:{actor.id}",
            finished_at=None if awaiting else datetime.now(UTC),
        )
        append(
            tenant_id=agent.tenant_id,
            actor=actor,
            action="tool.called",
            target_type="tool_call",
            target_id=call.pk,
            changes={"agent": str(agent.pk), "tool": call.tool, "status": call.status},
            seal_now=run_id is None,
        )
    return call


class RunToolInvoker:
    """The kernel `ToolInvoker` of one run: calls go through the agent's registry as the
    config's ``tool_role`` and each becomes a `ToolCall` of the run.

    Built lazily on the first call, so a plan without tool states (the default) costs
    nothing. A ``needs_approval`` call is recorded ``awaiting_approval`` with its exact
    arguments (what approving would execute) and the plan pauses, sending the run to review.
    ``cost_usd`` sums the run's executed calls (added to the run's cost).
    """

    def __init__(self, agent: Agent, run_id: Any) -> None:
        self.agent = agent
        self.run_id = run_id
        self.cost_usd = Decimal(0)
        self.calls = 0
        # The proposed call the plan paused on (the run's review request is about it).
        self.pending_action: dict[str, Any] | None = None
        self._ready: tuple[Mapping[str, Any], ToolCaller, ToolRegistry] | None = None

    async def _prepare(self) -> tuple[Mapping[str, Any], ToolCaller, ToolRegistry]:
        if self._ready is None:
            config = validate_agent_config(self.agent.blueprint, self.agent.config)
            caller = await sync_to_async(_run_caller)(self.agent, config)
            self._ready = (config, caller, await get_registry(self.agent, config))
        return self._ready

    async def __call__(self, tool_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        config, caller, registry = await self._prepare()
        arguments = _with_run_id(registry.get(tool_id), arguments, self.run_id)
        outcome = await registry.invoke(tool_id, arguments, caller=caller)
        if outcome.status in _EXECUTED or outcome.status == "needs_approval":
            awaiting = outcome.status == "needs_approval"
            self.calls += 1
            self.cost_usd += Decimal(0) if awaiting else outcome.cost_usd
            call = await sync_to_async(_record_in_scope)(
                agent=self.agent,
                config=config,
                outcome=outcome,
                arguments=arguments,
                actor=Actor.system("agent"),
                run_id=self.run_id,
                step=CURRENT_NODE.get(),
            )
            if awaiting:  # the plan pauses here: the run's review is this action
                tool = registry.get(tool_id)
                safety = registry.safety_level(tool, caller) if tool else "requires_confirmation"
                self.pending_action = action_context(call, tool, safety)
        return outcome


def _with_run_id(tool: Tool | None, arguments: dict[str, Any], run_id: Any) -> dict[str, Any]:
    """A tool that takes the run it acts for (``handoff_to_human``) gets this run's id: a
    plan's state does not know it, and a plan must not name another run."""
    properties = (tool.input_schema.get("properties") or {}) if tool is not None else {}
    if "run_id" not in properties:
        return arguments
    return {**arguments, "run_id": str(run_id)}


def _run_caller(agent: Agent, config: Mapping[str, Any]) -> ToolCaller:
    with tenant_scope(agent.tenant_id):
        return tool_caller(agent, config, str(config.get("tool_role") or "operator"))


def _record_in_scope(**kwargs: Any) -> ToolCall:
    with tenant_scope(kwargs["agent"].tenant_id):
        return record_call(**kwargs)


def invoke_as_operator(
    *, actor: Actor, agent: Agent, role: str, tool_id: str, arguments: Any
) -> ToolCall:
    """An operator's "try this tool": the rules of a run, as ``role``; the executed call
    is recorded (ToolCall, audit) and returned. A refusal raises and records nothing."""
    config = validate_agent_config(agent.blueprint, agent.config)
    caller = tool_caller(agent, config, role)
    registry = worker_loop.run(get_registry(agent, config))
    outcome = worker_loop.run(registry.invoke(tool_id, arguments, caller=caller))
    refusal = _refusal(outcome)
    if isinstance(refusal, ToolNeedsApproval):
        tool = registry.get(tool_id)
        refusal.proposal = {
            "config": config,
            "outcome": outcome,
            "arguments": dict(arguments),
            "tool": tool,
            "safety_level": registry.safety_level(tool, caller) if tool else "dangerous",
        }
    if refusal is not None:
        raise refusal
    if outcome.status not in _EXECUTED:  # a status this module does not know yet
        raise ToolDenied(outcome.error or outcome.status)
    return record_call(
        agent=agent, config=config, outcome=outcome, arguments=arguments, actor=actor
    )


# ------------------------------------------------------------------------- approvals
#
# A run's call that needs approval is recorded `awaiting_approval` with its exact arguments
# and an HITL request of kind `action` (its context carries `action_context`). A decision
# claims the call by compare-and-set (awaiting_approval → approved, or → rejected), inside
# the decision's transaction; the Celery task then claims it once more (approved →
# executing) before running it. Two concurrent approvals: one decision wins (the other is
# a 409). A worker killed before it took the call: the sweep re-sends it. A worker killed
# while the tool ran: its outcome is unknown, so it is never run again (the sweep marks it).

APPROVED_GRACE_SECONDS = 30.0
EXECUTING_STALE_SECONDS = 600.0


def action_context(call: ToolCall, tool: Tool | None, safety_level: str) -> dict[str, Any]:
    """What a reviewer sees and decides on: the call, its exact arguments and schema."""
    return {
        "tool_call_id": str(call.pk),
        "tool": call.tool,
        "arguments": call.pending_arguments or {},
        "input_schema": dict(tool.input_schema) if tool is not None else {"type": "object"},
        "safety_level": safety_level,
        "description": tool.description if tool is not None else "",
    }


def check_action_decision(
    action: Mapping[str, Any], decision: str, arguments: Any, approver_role: str
) -> None:
    """Refuse a decision on an action before anything changes: a dangerous call needs an
    operator or owner (403); an edit needs arguments matching the input schema (422)."""
    if decision == "reject":
        return
    if action.get("safety_level") == "dangerous" and approver_role not in APPROVER_ROLES:
        raise ToolDenied("a dangerous tool call may be approved only by an operator or owner")
    if decision != "edit":
        return
    if arguments is None:
        raise ToolArgumentsInvalid(
            "An edit of an action request needs the call's new arguments.",
            {"arguments": ["An edit of an action request needs the call's new arguments."]},
        )
    validator = compile_schema(action.get("input_schema") or {"type": "object"})
    problem = schema_error(arguments, validator, "arguments")
    if problem is not None:
        raise ToolArgumentsInvalid(problem, _argument_fields(problem))


def link_approval(call_id: Any, request_id: Any) -> None:
    ToolCall.objects.filter(pk=call_id).update(approval_id=request_id)


def claim_approval(
    call_id: Any, *, approve: bool, arguments: Mapping[str, Any] | None, approver_role: str
) -> ToolCall | None:
    """Compare-and-set a proposed call to approved (with edited arguments) or rejected;
    None when it is not awaiting approval any more. In the decision's transaction."""
    now = datetime.now(UTC)
    changes: dict[str, Any] = {"approver_role": approver_role[:20]}
    if approve:
        changes |= {"status": ToolCallStatus.APPROVED, "approved_at": now}
        if arguments is not None:
            changes["pending_arguments"] = dict(arguments)
    else:
        changes |= {
            "status": ToolCallStatus.REJECTED,
            "pending_arguments": None,
            "finished_at": now,
        }
    won = ToolCall.objects.filter(pk=call_id, status=ToolCallStatus.AWAITING_APPROVAL).update(
        **changes
    )
    return (
        ToolCall.objects.select_related("agent", "agent__tenant").get(pk=call_id) if won else None
    )


def _take_for_execution(call_id: Any) -> ToolCall | None:
    """approved → executing, once: the one worker that wins runs the tool."""
    won = ToolCall.objects.filter(pk=call_id, status=ToolCallStatus.APPROVED).update(
        status=ToolCallStatus.EXECUTING, approved_at=datetime.now(UTC)
    )
    if not won:
        return None
    return ToolCall.objects.select_related("agent", "agent__tenant").get(pk=call_id)


def execute_approved(call_id: Any) -> ToolCall | None:
    """Run an approved call exactly once and record its outcome (None: not this worker's,
    e.g. already executed, rejected, or taken by another worker)."""
    call = _take_for_execution(call_id)
    if call is None:
        return None
    agent = call.agent
    config = validate_agent_config(agent.blueprint, agent.config)
    role = str(config.get("tool_role") or "operator")
    caller = tool_caller(agent, config, role, approver_role=call.approver_role or None)
    registry = worker_loop.run(get_registry(agent, config))
    arguments = dict(call.pending_arguments or {})
    outcome = worker_loop.run(
        registry.invoke(
            call.tool, arguments, caller=caller, call_id=call.idempotency_key, approved=True
        )
    )
    return _finish_call(call, config, outcome, arguments)


def _finish_call(
    call: ToolCall, config: Mapping[str, Any], outcome: ToolOutcome, arguments: dict[str, Any]
) -> ToolCall:
    executed = outcome.status in _EXECUTED
    call.status = outcome.status if executed else ToolCallStatus.ERROR
    call.arguments = _redacted(arguments, config)
    call.pending_arguments = None
    call.result = _bounded(_redacted(outcome.output, config))
    call.error = "" if outcome.ok else (outcome.error or outcome.status)[:2000]
    call.duration_ms = outcome.duration_ms
    call.cost_usd = Decimal(outcome.cost_usd) if executed else Decimal(0)
    call.finished_at = datetime.now(UTC)
    with transaction.atomic():
        call.save(
            update_fields=[
                "status",
                "arguments",
                "pending_arguments",
                "result",
                "error",
                "duration_ms",
                "cost_usd",
                "finished_at",
            ]
        )
        append(
            tenant_id=call.tenant_id,
            actor=Actor.system("agent"),
            action="tool.executed",
            target_type="tool_call",
            target_id=call.pk,
            changes={"tool": call.tool, "status": call.status, "approval": str(call.approval_id)},
        )
    return call


def lost_approved_calls(now: datetime) -> tuple[list[ToolCall], list[ToolCall]]:
    """Platform-wide: approved calls no worker took (to re-send), and calls whose worker
    died while the tool ran (not to be run again)."""
    approved = ToolCall.unscoped.filter(
        status=ToolCallStatus.APPROVED,
        approved_at__lte=now - timedelta(seconds=APPROVED_GRACE_SECONDS),
    ).order_by("approved_at")[:500]
    stale = ToolCall.unscoped.filter(
        status=ToolCallStatus.EXECUTING,
        approved_at__lte=now - timedelta(seconds=EXECUTING_STALE_SECONDS),
    ).order_by("approved_at")[:500]
    return list(approved), list(stale)


def abandon_call(call: ToolCall) -> bool:
    """An executing call whose worker died: its outcome is unknown; never run it again."""
    return bool(
        ToolCall.unscoped.filter(pk=call.pk, status=ToolCallStatus.EXECUTING).update(
            status=ToolCallStatus.ERROR,
            pending_arguments=None,
            error="interrupted while executing: the outcome is unknown, so it is not run again",
            finished_at=datetime.now(UTC),
        )
    )
