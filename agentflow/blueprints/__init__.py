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
from time import perf_counter
from typing import Any

from pydantic import BaseModel

from agentflow.kernel.blueprints import StepAgent
from agentflow.kernel.config import ConfigIssue
from agentflow.kernel.pipeline import plan_path
from agentflow.kernel.results import AgentReply
from agentflow.models import Agent

__all__ = ["BlueprintRunner", "BlueprintSpec", "RunnerOf", "reply_of"]

# What an escalated reply says to the end user while a person looks at it.
_ESCALATED = "A member of our team will review this and get back to you."

# The runner of another agent of the tenant (`agentflow.pipelines.get_pipeline`): handed to
# `build` by the pipelines module, which lists the blueprints and so sits above them.
RunnerOf = Callable[[Agent], Awaitable[Any]]


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

    def build(
        self, agent: Agent, config: dict[str, Any], runner_of: RunnerOf | None = None
    ) -> BlueprintRunner:
        ports = dict(self.ports(agent, config)) if self.ports is not None else {}
        if self.runner_ports is not None:
            if runner_of is None:
                raise TypeError(f"{self.name} runs other agents: build it with runner_of")
            ports.update(self.runner_ports(agent, config, runner_of))
        return BlueprintRunner(self.agent_class(config, **ports))


class BlueprintRunner:
    """Runs a `StepAgent` for one message at a time; what `get_pipeline` hands out."""

    def __init__(self, agent: StepAgent) -> None:
        self.agent = agent
        self.plan = agent.planner

    async def process_message(
        self, *, user_id: str, message: str, context: Mapping[str, Any] | None = None
    ) -> AgentReply:
        origin = perf_counter()
        result = await self.agent.run(message, user_id=user_id, context=context)
        return reply_of(result, user_id, origin)

    async def aclose(self) -> None:
        close = getattr(self.agent.llm, "aclose", None)  # network providers hold a pool
        if close is not None:
            await close()


def reply_of(result: Any, user_id: str, origin: float) -> AgentReply:
    """The reply of a `StepAgent` run, read from the plan state's conventions."""
    plan = result.state.plan_state
    flags = plan.state
    content = str(plan.response.get("content") or "")
    unfinished = result.plan is not None and result.plan.status != "completed"
    escalate = bool(flags.get("escalate")) or unfinished
    reason = flags.get("escalation_reason") or (
        (result.plan.error or f"plan {result.plan.status}") if unfinished else None
    )
    metadata: dict[str, Any] = {}
    if flags.get("output") is not None:
        metadata["output"] = flags["output"]
    return AgentReply(
        content=_ESCALATED if escalate else content,
        user_id=user_id,
        session_id="",
        intent=str(plan.intent.get("name") or ""),
        intent_confidence=float(plan.intent.get("confidence") or 0.0),
        confidence=float(plan.response.get("confidence") or 0.0),
        thread_id="",
        transition="",
        escalated=escalate,
        escalation_reason=str(reason)[:200] if escalate and reason else None,
        proposed_answer=content if escalate else None,
        metadata=metadata,
        plan_path=plan_path(result.plan, origin) if result.plan is not None else [],
    )
