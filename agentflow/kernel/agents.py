"""Agents and blueprints (SPEC 4.7): `BaseAgent`, `AgentBlueprint` and the blueprint registry.

A blueprint is a named, documented way to build an agent: its class, default configuration
and the JSON schema that configuration must satisfy. Third-party packages advertise
blueprints in the ``agentflow.blueprints`` entry-point group; `BlueprintRegistry.discover`
loads them.

`BaseAgent.run` drives the classic loop: ``on_start``, ``on_message``, then while
``should_continue``: ``plan`` → ``on_plan`` → ``execute_step``; finally ``on_finish``.
`PlannerAgent` is a `BaseAgent` whose plan is a declarative planner (FSM, behavior tree or
LLM, from ``config["planner"]``): the planner chooses the steps and the agent's
``execute_step`` runs each built-in step or sub-agent.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import jsonschema

from agentflow.kernel.llm.base import LLMProvider
from agentflow.kernel.planning.model import (
    Action,
    PlanResult,
    PlanState,
    StepOutcome,
    ToolInvoker,
)
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.runtime import Replanner
from agentflow.kernel.planning.validation import load_plan

__all__ = [
    "BLUEPRINT_GROUP",
    "AgentBlueprint",
    "AgentConfig",
    "AgentRunResult",
    "AgentState",
    "BaseAgent",
    "BlueprintError",
    "BlueprintRegistry",
    "PlannerAgent",
    "blueprints",
]

BLUEPRINT_GROUP = "agentflow.blueprints"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class BlueprintError(ValueError):
    """A blueprint that cannot be registered, found, loaded or configured."""


class AgentConfig(dict[str, Any]):
    """The agent's configuration: a dict that also reads as attributes (``config.prefix``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(slots=True)
class AgentState:
    """What an agent's run carries from step to step."""

    message: str = ""
    user_id: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    current_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    plan_state: PlanState = field(default_factory=PlanState)
    output: Any = None
    done: bool = False


@dataclass(slots=True)
class AgentRunResult:
    output: Any
    state: AgentState
    plan: PlanResult | None = None

    @property
    def status(self) -> str:
        return self.plan.status if self.plan is not None else "completed"


class BaseAgent:
    """Subclass and implement `plan` and `execute_step`; override hooks as needed."""

    blueprint: AgentBlueprint | None = None

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        llm: LLMProvider | None = None,
        tools: ToolInvoker | None = None,
        replanner: Replanner | None = None,
    ) -> None:
        self.config = AgentConfig(config or {})
        self.llm = llm
        self.tools = tools
        self.replanner = replanner

    async def plan(self, state: AgentState) -> Any:
        """The next action (anything `execute_step` understands), or None to stop."""
        raise NotImplementedError

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        raise NotImplementedError

    def should_continue(self, state: AgentState) -> bool:
        limit = int(self.config.get("max_iterations", 10))
        return not state.done and state.current_step < limit

    # hooks
    async def on_start(self, state: AgentState) -> None:
        return None

    async def on_message(self, state: AgentState, message: str) -> None:
        return None

    async def on_plan(self, state: AgentState, action: Any) -> None:
        return None

    async def on_finish(self, state: AgentState, output: Any) -> None:
        return None

    def new_state(
        self, message: str, user_id: str = "", context: Mapping[str, Any] | None = None
    ) -> AgentState:
        plan_state = PlanState(message=message, user=dict((context or {}).get("user") or {}))
        return AgentState(message, user_id, dict(context or {}), plan_state=plan_state)

    async def run(
        self, message: str, *, user_id: str = "", context: Mapping[str, Any] | None = None
    ) -> AgentRunResult:
        state = self.new_state(message, user_id, context)
        await self.on_start(state)
        await self.on_message(state, message)
        output: Any = None
        while self.should_continue(state):
            action = await self.plan(state)
            await self.on_plan(state, action)
            if action is None:
                break
            output = await self.execute_step(state, action)
            state.history.append({"action": action, "result": output})
            state.current_step += 1
        state.output = output
        await self.on_finish(state, output)
        return AgentRunResult(output, state)


class _AgentSteps:
    """Adapts an agent's `execute_step` to the planners' `StepExecutor` protocol."""

    def __init__(self, agent: BaseAgent, state: AgentState) -> None:
        self.agent = agent
        self.state = state

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        self.state.plan_state = state
        result = await self.agent.execute_step(self.state, action)
        self.state.current_step += 1
        self.state.history.append({"action": action.describe(), "result": result})
        if isinstance(result, StepOutcome):
            return result
        return StepOutcome.ok(result)


class PlannerAgent(BaseAgent):
    """A `BaseAgent` driven by ``config["planner"]`` (``{type, definition}`` or YAML text).

    ``execute_step(state, action)`` receives the planner's `Action`; return a `StepOutcome`
    (or any value, meaning success with that output). The planner is loaded and validated
    once, when the agent is created, against ``known_steps`` (and the tools and agents the
    config names).
    """

    known_steps: frozenset[str] | None = None

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        spec = self.config.get("planner")
        if spec is None:
            raise BlueprintError(f"{type(self).__name__} needs a `planner` in its config")
        known = Known(
            steps=self.known_steps,
            tools=self.config.get("tools"),
            agents=self.config.get("agents"),
        )
        self.planner = load_plan(spec, known=known)

    async def plan(self, state: AgentState) -> Any:
        return self.planner

    def tool_invoker(self, state: AgentState) -> ToolInvoker | None:
        """The run's invoker (``context["tool_invoker"]``: the platform's records each call
        as the run's), else the agent's own; None: tool states fail, steps call nothing."""
        given = state.context.get("tool_invoker")
        return given if isinstance(given, ToolInvoker) else self.tools

    async def run(
        self, message: str, *, user_id: str = "", context: Mapping[str, Any] | None = None
    ) -> AgentRunResult:
        state = self.new_state(message, user_id, context)
        await self.on_start(state)
        await self.on_message(state, message)
        planner = await self.plan(state)
        await self.on_plan(state, planner)
        steps = _AgentSteps(self, state)
        tools = self.tool_invoker(state)
        if getattr(planner, "kind", "") == "llm":
            if self.llm is None:
                raise BlueprintError("an llm planner needs the agent's llm provider")
            result = await planner.run(
                state.plan_state, self.llm, steps, tools=tools, replanner=self.replanner
            )
        else:
            result = await planner.run(
                state.plan_state, steps, tools=tools, replanner=self.replanner
            )
        state.plan_state = result.state
        state.output = result.state.response.get("content") or None
        state.done = True
        await self.on_finish(state, state.output)
        return AgentRunResult(state.output, state, result)

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no step `{action}`")


@dataclass(frozen=True, slots=True)
class AgentBlueprint:
    """A named recipe for an agent: class, description, default config and its JSON schema."""

    name: str
    agent_class: type[BaseAgent]
    description: str = ""
    default_config: Mapping[str, Any] = field(default_factory=dict)
    config_schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise BlueprintError(
                f"blueprint name {self.name!r} must be lower_snake_case (letters, digits, _)"
            )
        if not (isinstance(self.agent_class, type) and issubclass(self.agent_class, BaseAgent)):
            raise BlueprintError(f"blueprint {self.name!r}: agent_class must subclass BaseAgent")
        if self.config_schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(dict(self.config_schema))
            except jsonschema.SchemaError as exc:
                raise BlueprintError(
                    f"blueprint {self.name!r}: invalid config_schema: {exc.message}"
                ) from None
            self.validate_config(self.default_config)

    def config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The default config with ``overrides`` on top (one level deep), validated."""
        merged = dict(self.default_config)
        for key, value in (overrides or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        self.validate_config(merged)
        return merged

    def validate_config(self, config: Mapping[str, Any]) -> None:
        if self.config_schema is None:
            return
        validator = jsonschema.Draft202012Validator(dict(self.config_schema))
        problems = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path))
        if problems:
            listed = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or '(config)'}: {e.message}" for e in problems
            )
            raise BlueprintError(f"blueprint {self.name!r}: invalid config: {listed}")

    def create(self, config: Mapping[str, Any] | None = None, **dependencies: Any) -> BaseAgent:
        agent = self.agent_class(self.config(config), **dependencies)
        agent.blueprint = self
        return agent

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "default_config": dict(self.default_config),
            "config_schema": dict(self.config_schema) if self.config_schema else None,
        }


class BlueprintRegistry:
    def __init__(self, blueprints: Iterable[AgentBlueprint] = ()) -> None:
        self._blueprints: dict[str, AgentBlueprint] = {}
        self._origins: dict[str, str] = {}
        self.errors: list[BlueprintError] = []
        for blueprint in blueprints:
            self.register(blueprint)

    def register(
        self, blueprint: AgentBlueprint, *, replace: bool = False, origin: str = ""
    ) -> AgentBlueprint:
        if not isinstance(blueprint, AgentBlueprint):
            raise BlueprintError(f"{blueprint!r} is not an AgentBlueprint")
        existing = self._blueprints.get(blueprint.name)
        if existing is not None and existing is not blueprint and not replace:
            where = self._origins.get(blueprint.name) or "code"
            raise BlueprintError(f"blueprint {blueprint.name!r} is already registered ({where})")
        self._blueprints[blueprint.name] = blueprint
        self._origins[blueprint.name] = origin
        return blueprint

    def get(self, name: str) -> AgentBlueprint:
        try:
            return self._blueprints[name]
        except KeyError:
            known = ", ".join(sorted(self._blueprints)) or "none"
            raise BlueprintError(f"no blueprint named {name!r} (known: {known})") from None

    def list(self) -> list[AgentBlueprint]:
        return [self._blueprints[name] for name in sorted(self._blueprints)]

    def __contains__(self, name: object) -> bool:
        return name in self._blueprints

    def __len__(self) -> int:
        return len(self._blueprints)

    def discover(self, group: str = BLUEPRINT_GROUP, *, strict: bool = True) -> builtins.list[str]:
        """Register every blueprint advertised in ``group``; return their names.

        An entry point may name an `AgentBlueprint`, a list of them, or a callable returning
        either. With ``strict=False`` a broken entry point is kept in ``errors`` and skipped.
        """
        loaded: builtins.list[str] = []
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            try:
                loaded.extend(self._load(entry_point))
            except BlueprintError as exc:
                if strict:
                    raise
                self.errors.append(exc)
        return loaded

    def _load(self, entry_point: EntryPoint) -> builtins.list[str]:
        dist = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
        origin = f"entry point {entry_point.name!r} of {dist}"
        try:
            target = entry_point.load()
        except Exception as exc:
            raise BlueprintError(f"{origin} failed to load: {type(exc).__name__}: {exc}") from exc
        found = target() if callable(target) and not isinstance(target, AgentBlueprint) else target
        items = found if isinstance(found, list | tuple) else [found]
        names: builtins.list[str] = []
        for item in items:
            if not isinstance(item, AgentBlueprint):
                raise BlueprintError(f"{origin} gave {type(item).__name__}, not an AgentBlueprint")
            if self._blueprints.get(item.name) is item or (
                item.name in self._blueprints and self._origins.get(item.name) == origin
            ):
                names.append(item.name)
                continue
            self.register(item, origin=origin)
            names.append(item.name)
        return names


blueprints = BlueprintRegistry()
register_blueprint: Callable[..., AgentBlueprint] = blueprints.register
