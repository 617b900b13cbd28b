"""qa_test_agent on the platform: its config, and the agents under test, found in the tenant.

A test turn runs the target agent's runner in-process (`agentflow.pipelines.get_pipeline`,
what a run's worker calls, handed in as ``runner_of``), without a `Run` row: a suite of 50
turns would otherwise leave 50 runs, review items and usage records no customer sent. The
preflight and the tenant's run quota are not applied to test turns; `max_turns` bounds a
suite instead. Each scenario talks under its own user id (``qa-test:<run id>:<n>``) and its
conversation is erased after the scenario (session and episodic memory), unless
``keep_conversations`` is set.

The agent under test must be of the same tenant: the lookup goes through the tenant-scoped
manager, so another tenant's agent is "no agent ... in this tenant", exactly like an unknown
id. A ``qa_test_agent`` cannot be a target (no suites running suites).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from pydantic import BaseModel, ConfigDict, Field

from agentflow.blueprints import BlueprintConfig, BlueprintSpec, RunnerOf
from agentflow.kernel.blueprints.qa_test import QATestAgent, TargetError, looks_like_id
from agentflow.kernel.config import ConfigIssue
from agentflow.kernel.results import AgentReply
from agentflow.models import Agent
from tenants.context import current_tenant_id

__all__ = ["SPEC", "AgentTargets", "QATestConfig", "find_target"]

NAME = "qa_test_agent"


class QATestConfig(BlueprintConfig):
    """What a tenant may set on a qa_test_agent; ``{}`` is valid (the suite names its agent)."""

    model_config = ConfigDict(extra="forbid")

    target_agent: uuid.UUID | None = Field(
        default=None,
        description="Id of the agent under test (same tenant) when a suite has no `agent:`.",
    )
    max_turns: int = Field(
        200, ge=1, le=1_000, description="Most turns one suite may have, over all scenarios."
    )
    turn_timeout_seconds: float = Field(
        30.0, gt=0, le=300, description="Seconds the agent under test has for one reply."
    )
    case_sensitive: bool = Field(
        False, description="Compare intents and `contains`/`not_contains` case-sensitively."
    )
    concurrency: int = Field(
        1,
        ge=1,
        le=8,
        description="Scenarios run at once (each its own conversation); 1 runs them in order.",
    )
    keep_conversations: bool = Field(
        False,
        description="Keep each scenario's conversation with the target (default: erased after).",
    )


def find_target(ref: str, tester_id: object | None = None) -> Agent:
    """The agent `ref` (id or name) of the current tenant scope; `TargetError` if unusable."""
    lookup = {"pk": ref} if looks_like_id(ref) else {"name": ref}
    agent = Agent.objects.filter(**lookup).first()
    if agent is None:
        raise TargetError(f"no agent {ref!r} in this tenant")
    if tester_id is not None and str(agent.pk) == str(tester_id):
        raise TargetError("a qa_test_agent cannot test itself")
    if agent.blueprint == NAME:
        raise TargetError(f"agent {ref!r} is a {NAME}: test the agent it tests instead")
    return agent


class _PipelineTarget:
    """An agent of the tenant, answered by its runner in this process."""

    def __init__(self, agent: Agent, runner_of: RunnerOf) -> None:
        self.agent = agent
        self.id = str(agent.pk)
        self.name = agent.name
        self.runner_of = runner_of

    async def _runner(self) -> Any:
        return await self.runner_of(self.agent)  # cached per (agent, version) per process

    async def reply(self, *, user_id: str, message: str, context: Mapping[str, Any]) -> AgentReply:
        runner = await self._runner()
        ctx = {**context, "tenant_id": self.agent.tenant_id, "agent_id": self.id}
        reply: AgentReply = await runner.process_message(
            user_id=user_id, message=message, context=ctx
        )
        return reply

    async def forget(self, user_id: str) -> None:
        forget = getattr(await self._runner(), "forget_user", None)
        if forget is not None:  # only the support pipeline keeps conversations
            await forget(user_id)


class AgentTargets:
    """The `TargetDirectory` of one qa_test_agent (or of the CLI: no tester)."""

    def __init__(self, runner_of: RunnerOf, tester_id: object | None = None) -> None:
        self.runner_of = runner_of
        self.tester_id = tester_id

    async def open(self, ref: str) -> _PipelineTarget:
        agent = await sync_to_async(find_target)(ref, self.tester_id)
        return _PipelineTarget(agent, self.runner_of)


def _ports(agent: Agent, config: dict[str, Any], runner_of: RunnerOf) -> Mapping[str, Any]:
    return {"targets": AgentTargets(runner_of, agent.pk)}


def _check(model: BaseModel) -> list[ConfigIssue]:
    """The target must be an agent of the tenant; looked up when the config is saved.

    Saving runs synchronously inside the tenant's scope; a pipeline build (on the event loop)
    validates the same config again and skips the lookup, which each run makes anyway.
    """
    assert isinstance(model, QATestConfig)
    if model.target_agent is None or current_tenant_id() is None or _on_event_loop():
        return []
    try:
        find_target(str(model.target_agent))
    except TargetError as exc:
        return [ConfigIssue("target_agent", str(exc))]
    return []


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


SPEC = BlueprintSpec(
    name=NAME,
    description=(
        "Runs test conversations (scenario YAML) against another agent of the tenant and "
        "reports pass/fail with a diff per turn: regression tests for agents."
    ),
    config_model=QATestConfig,
    agent_class=QATestAgent,
    runner_ports=_ports,
    check=_check,
)
