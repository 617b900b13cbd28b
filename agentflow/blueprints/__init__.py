"""Blueprints other than the support agent: a kernel `StepAgent` behind the runner API.

A `BlueprintSpec` names the blueprint's pydantic config model (what a tenant may write:
unknown keys are errors, each naming its field), its kernel agent class, and the platform
ports the agent needs (read-only data sources, the tenant's knowledge...), built once per
agent build. `BlueprintRunner` runs that agent for a run's message and turns what its
steps left in the plan state into the `AgentReply` every run settles with (content,
escalation, ``metadata.output`` for the structured result, the planner path).

The catalog of built-in specs is `agentflow.blueprints.catalog.SPECS`; `agentflow.pipelines`
lists them next to ``support_agent``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from agentflow.builtin_tools import BuiltinToolSettings
from agentflow.kernel.blueprints import BlueprintRunner, StepAgent, reply_of
from agentflow.kernel.config import ConfigIssue, LLMConfig
from agentflow.kernel.llm.base import LLMProvider
from agentflow.kernel.planning.parsing import Known
from agentflow.models import Agent
from agentflow.planners import PlannerConfig, kernel_plan_spec

__all__ = [
    "BlueprintConfig",
    "BlueprintRunner",
    "BlueprintSpec",
    "RunnerOf",
    "ToolGrantConfig",
    "granted_tool_ids",
    "reply_of",
]

# The runner of another agent of the tenant (`agentflow.pipelines.get_pipeline`): handed to
# `build` by the pipelines module, which lists the blueprints and so sits above them.
RunnerOf = Callable[[Agent], Awaitable[Any]]


class ToolGrantConfig(BaseModel):
    """One granted tool with this agent's safety level and price for it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=100)
    safety_level: Literal["safe", "requires_confirmation", "dangerous"] | None = None
    cost_per_call: float | None = Field(
        default=None,
        ge=0,
        description="Dollars per call for this agent, over the tool's own price: how an MCP "
        "tool (its server declares none) or a paid API is counted in the run's cost, the "
        "preflight and the agent's budget.",
    )

    @field_validator("cost_per_call", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("must be a number of dollars (e.g. 0.02)")
        return value

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Stored as given: no `cost_per_call: null` added to a grant that set no price.
        data: dict[str, Any] = handler(self)
        if data.get("cost_per_call") is None:
            data.pop("cost_per_call", None)
        return data


ToolRole = Literal["viewer", "reviewer", "operator", "owner"]


def granted_tool_ids(tools: Any) -> list[str]:
    """The ids a config's ``tools`` grants (entries are an id or ``{id, safety_level}``)."""
    ids = []
    for entry in tools or ():
        if isinstance(entry, ToolGrantConfig):
            ids.append(entry.id)
        elif isinstance(entry, Mapping):
            ids.append(str(entry.get("id") or ""))
        else:
            ids.append(str(entry))
    return ids


class BlueprintConfig(BaseModel):
    """What every StepAgent blueprint's config may set besides its own fields.

    Subclass it for a blueprint's config (unknown keys stay errors). ``planner`` replaces
    the blueprint's default plan over the same steps; ``llm`` gives the agent a model, which
    steps use when there is one (the default, offline, does the work without). ``tools``,
    ``tool_role`` and ``tool_settings`` are the support agent's: a run calls the granted
    tools (a tenant planner's tool states, or a step that acts, like the triage agent's
    ticket update) through the platform's invoker, each call a ToolCall of the run.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    planner: PlannerConfig | None = Field(
        None,
        description="{type: fsm | behavior_tree | llm, definition: YAML text or object} over "
        "the blueprint's steps, validated when saved; null: the blueprint's default_planner.",
    )
    llm: LLMConfig = Field(
        default_factory=LLMConfig,
        description="Providers in failover order, as for support_agent; offline by default.",
    )
    tools: list[str | ToolGrantConfig] = Field(
        default_factory=list,
        max_length=200,
        description="Tools the agent may call (deny by default): an id, or {id, safety_level} "
        "to set this agent's safety level for it (never below a tool's own 'dangerous').",
    )
    tool_role: ToolRole = Field(
        "operator",
        description="The governance role a run calls tools as: its tool permission levels "
        "(PUT /agents/{id}/tool-permissions, capped by the role's ceiling) apply.",
    )
    tool_settings: BuiltinToolSettings = Field(
        default_factory=BuiltinToolSettings,
        description="Settings of the built-in tools (http_request, zendesk / jira tickets, "
        "send_email, lookup_order): a tool whose section is absent is not offered; URLs must "
        "be under TOOL_ALLOWED_URLS and secrets ${VAR} of TOOL_SECRET_ENV_VARS.",
    )


# Every planner type runs on a StepAgent (an llm planner with the agent's model).
STEP_AGENT_PLANNERS = frozenset({"fsm", "behavior_tree", "llm"})


@dataclass(frozen=True)
class BlueprintSpec:
    """A built-in blueprint built on a kernel `StepAgent`."""

    name: str
    description: str
    config_model: type[BaseModel]
    agent_class: type[StepAgent]
    # Platform ports handed to ``agent_class(config, **ports)``: ``ports(agent, config)``.
    # Called when the agent is built (no database access there: ports read lazily).
    ports: Callable[[Agent, dict[str, Any]], Mapping[str, Any]] | None = None
    # Checks pydantic cannot express (cross-field, allowlists); each issue names its field.
    check: Callable[[BaseModel], list[ConfigIssue]] | None = None
    # Ports that talk to other agents of the tenant: ``runner_ports(agent, config, runner_of)``.
    runner_ports: Callable[[Agent, dict[str, Any], RunnerOf], Mapping[str, Any]] | None = None

    @property
    def known(self) -> Known:
        """What a tenant's planner for this blueprint may name: its steps."""
        return self.known_with(())

    def known_with(self, tools: Any) -> Known:
        """Its steps, and the tools a config grants (a planner's tool states)."""
        granted = frozenset(granted_tool_ids(tools))
        return Known(steps=self.agent_class.known_steps, tools=granted, agents=frozenset())

    def build(
        self,
        agent: Agent,
        config: dict[str, Any],
        *,
        llm: LLMProvider | None = None,
        runner_of: RunnerOf | None = None,
    ) -> BlueprintRunner:
        ports = dict(self.ports(agent, config)) if self.ports is not None else {}
        if self.runner_ports is not None:
            if runner_of is None:
                raise TypeError(f"{self.name} runs other agents: build it with runner_of")
            ports.update(self.runner_ports(agent, config, runner_of))
        given = dict(config)
        # The kernel checks a planner's tool states against the granted ids.
        given["tools"] = granted_tool_ids(given.get("tools"))
        if given.get("planner"):  # validated on save; the kernel reads its own spec shape
            given["planner"] = kernel_plan_spec(PlannerConfig.model_validate(given["planner"]))
        return BlueprintRunner(self.agent_class(given, llm=llm, **ports))
