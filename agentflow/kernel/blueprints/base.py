"""`StepAgent`: a planner-driven agent whose built-in steps are its ``step_<name>`` methods.

Every built-in blueprint but the support agent is a `StepAgent`: its default planner (an FSM
or behavior tree over its step names) says in which order and on which branches the steps
run; a tenant may replace the planner in the agent's config, within the same step names.

A run reads what the steps left in the plan state (the same six sections CEL conditions
see), by convention:

* ``response.content``: the text answer, ``response.confidence`` its confidence;
* ``intent.name`` / ``intent.confidence``: what the message was classified as, if anything;
* ``state.output``: the structured result (a triage decision, findings, a table...);
* ``state.escalate`` (bool) and ``state.escalation_reason``: a person must look at it.

`finish` writes them in one call.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any, ClassVar

from agentflow.kernel.agents import AgentRunResult, AgentState, BlueprintError, PlannerAgent
from agentflow.kernel.pipeline import plan_path
from agentflow.kernel.planning.model import Action, StepOutcome
from agentflow.kernel.results import AgentReply

__all__ = ["BlueprintRunner", "StepAgent", "finish", "reply_of"]

# What an escalated reply says to the end user while a person looks at it.
_ESCALATED = "A member of our team will review this and get back to you."

_STEP_PREFIX = "step_"


class StepAgent(PlannerAgent):
    """Subclass with ``async def step_<name>(self, state: AgentState)`` methods.

    A step returns a `StepOutcome` (``StepOutcome.failed(...)`` takes the planner's
    ``on_error`` branch) or any value, meaning success with that output. Without a
    ``planner`` in its config the agent runs `default_planner`.
    """

    default_planner: ClassVar[Mapping[str, Any]] = {}
    known_steps: frozenset[str] | None = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.known_steps = frozenset(
            name.removeprefix(_STEP_PREFIX)
            for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if name.startswith(_STEP_PREFIX)
        )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        given = dict(config or {})
        if not given.get("planner"):
            if not self.default_planner:
                raise BlueprintError(f"{type(self).__name__} has no default_planner")
            given["planner"] = dict(self.default_planner)
        super().__init__(given, **kwargs)

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        if not isinstance(action, Action) or action.kind != "step":
            return StepOutcome.failed(f"{type(self).__name__} runs only its own steps")
        method: Callable[[AgentState], Awaitable[Any]] | None = getattr(
            self, f"{_STEP_PREFIX}{action.name}", None
        )
        if method is None:  # the planner was validated against known_steps
            return StepOutcome.failed(f"no step {action.name!r}")
        return await method(state)


def finish(
    state: AgentState,
    *,
    content: str,
    output: Mapping[str, Any] | None = None,
    confidence: float = 1.0,
    intent: str = "",
    escalate: bool = False,
    reason: str | None = None,
) -> None:
    """Record a step's answer where the run reads it (see the module docstring)."""
    plan = state.plan_state
    plan.response["content"] = content
    plan.response["confidence"] = float(confidence)
    if intent:
        plan.intent = {"name": intent, "confidence": float(confidence)}
    if output is not None:
        plan.state["output"] = dict(output)
    plan.state["escalate"] = bool(escalate)
    if reason:
        plan.state["escalation_reason"] = reason


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


def reply_of(result: AgentRunResult, user_id: str, origin: float) -> AgentReply:
    """The reply of a `StepAgent` run, read from the plan state's conventions."""
    plan = result.state.plan_state
    flags = plan.state
    content = str(plan.response.get("content") or "")
    walked = result.plan
    unfinished = walked is not None and walked.status != "completed"
    escalate = bool(flags.get("escalate")) or unfinished
    reason = flags.get("escalation_reason")
    if reason is None and walked is not None and unfinished:
        reason = walked.error or f"plan {walked.status}"  # failed, or paused for a person
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
        plan_path=plan_path(walked, origin) if walked is not None else [],
    )
