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
from typing import Any, ClassVar

from agentflow.kernel.agents import AgentState, BlueprintError, PlannerAgent
from agentflow.kernel.planning.model import Action, StepOutcome

__all__ = ["StepAgent", "finish"]

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
