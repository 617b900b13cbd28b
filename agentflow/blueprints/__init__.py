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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agentflow.kernel.blueprints import BlueprintRunner, StepAgent, reply_of
from agentflow.kernel.config import ConfigIssue
from agentflow.models import Agent

__all__ = ["BlueprintRunner", "BlueprintSpec", "reply_of"]


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

    def build(self, agent: Agent, config: dict[str, Any]) -> BlueprintRunner:
        ports = dict(self.ports(agent, config)) if self.ports is not None else {}
        return BlueprintRunner(self.agent_class(config, **ports))
