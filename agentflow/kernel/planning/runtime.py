"""Running one action of a plan, recording it, and resuming a paused run exactly once.

`ActionRunner` is the only place a plan touches the outside world: built-in steps and
sub-agents go to the pluggable `StepExecutor`, tool calls to the `ToolInvoker` (after their
CEL arguments are evaluated against the state). A per-state timeout turns a slow action into
a ``timeout`` outcome; an exception from an executor becomes an ``error`` outcome (never a
crash of the run). Every planner builds the same `StepRecord` path from these outcomes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agentflow.kernel import tracing
from agentflow.kernel.llm.base import BudgetExceeded
from agentflow.kernel.planning.expressions import ExpressionEvalError
from agentflow.kernel.planning.model import (
    Action,
    FailsTheMessage,
    PlanState,
    StepExecutor,
    StepOutcome,
    ToolInvoker,
)

__all__ = [
    "CURRENT_NODE",
    "ActionRunner",
    "AlreadyResumed",
    "InMemoryResumeLedger",
    "ReplanDecision",
    "Replanner",
    "ResumeError",
    "ResumeLedger",
    "digest",
    "trigger_of",
]

# The plan node whose tool call is running: a `ToolInvoker` reads it to say which step of
# the plan made the call (the platform records it on the call).
CURRENT_NODE: ContextVar[str] = ContextVar("agentflow_plan_node", default="")

# Tool statuses (agentflow.kernel.tools) and what a plan does with them.
_TOOL_ERRORS = {"error", "timeout", "denied", "invalid_arguments", "invalid_output"}


class ResumeError(RuntimeError):
    """The snapshot cannot be resumed (another plan, another planner)."""


class AlreadyResumed(ResumeError):
    """The snapshot's token was already used: a paused run resumes exactly once."""


class ResumeLedger(Protocol):
    """Claims a snapshot token once; the platform implements it with a compare-and-set row."""

    def claim(self, token: str) -> bool: ...


class InMemoryResumeLedger:
    def __init__(self) -> None:
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, token: str) -> bool:
        with self._lock:
            if token in self._used:
                return False
            self._used.add(token)
            return True


@dataclass(frozen=True, slots=True)
class ReplanDecision:
    """What to do after a failed step: ``retry`` (after ``delay_s``), ``escalate`` (pause for
    a human), ``fallback`` (stop this plan so a simpler planner takes over) or ``continue``
    (follow the plan's own error transition)."""

    strategy: Literal["retry", "escalate", "fallback", "continue"]
    delay_s: float = 0.0
    reason: str = ""


class Replanner(Protocol):
    async def decide(
        self, trigger: str, node: str, outcome: StepOutcome, attempt: int
    ) -> ReplanDecision: ...


TRIGGERS = ("failure", "timeout", "budget", "quality", "external")


def trigger_of(outcome: StepOutcome) -> str:
    """Why a step did not succeed, as a replanning trigger."""
    if outcome.status == "timeout":
        return "timeout"
    prefix = (outcome.error or "").split(":", 1)[0]
    return prefix if prefix in ("budget", "quality", "external") else "failure"


def digest(definition: Any) -> str:
    """A stable fingerprint of a normalised plan definition."""
    text = json.dumps(definition, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ActionRunner:
    def __init__(
        self,
        executor: StepExecutor | None = None,
        tools: ToolInvoker | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.executor = executor
        self.tools = tools
        self.clock = clock

    async def run(
        self, action: Action, state: PlanState, limit_s: float | None, node: str = ""
    ) -> StepOutcome:
        if not tracing.active():  # no span at all: a step costs what it did before tracing
            return await self._limited(action, state, limit_s, node)
        with tracing.step_span(node, str(action)) as span:
            outcome = await self._limited(action, state, limit_s, node)
            tracing.record_step(span, outcome)
            return outcome

    async def _limited(
        self, action: Action, state: PlanState, limit_s: float | None, node: str
    ) -> StepOutcome:
        if action.kind == "none":
            return StepOutcome.ok()
        if action.kind == "human":
            return StepOutcome("paused", error=action.name or "waiting for a human")
        try:
            if limit_s is None:
                return await self._run(action, state, node)
            # asyncio.timeout (no extra task, unlike wait_for): a few µs, not tens.
            async with asyncio.timeout(limit_s):
                return await self._run(action, state, node)
        except TimeoutError:
            return StepOutcome("timeout", error=f"{action} took longer than {limit_s:g}s")
        except BudgetExceeded as exc:
            return StepOutcome("error", error=f"budget: {exc}")
        except ExpressionEvalError as exc:
            return StepOutcome("error", error=f"arguments: {exc}")
        except FailsTheMessage:
            raise
        except Exception as exc:  # an executor's bug is a failed step, not a crashed run
            return StepOutcome("error", error=f"{type(exc).__name__}: {exc}")

    async def _run(self, action: Action, state: PlanState, node: str = "") -> StepOutcome:
        if action.kind == "tool":
            token = CURRENT_NODE.set(node)
            try:
                return await self._call_tool(action, state)
            finally:
                CURRENT_NODE.reset(token)
        if self.executor is None:
            return StepOutcome("error", error=f"no step executor for {action}")
        outcome = await self.executor.execute(action, state)
        if action.kind == "agent" and outcome.status == "ok" and outcome.output is not None:
            state.state[action.name] = outcome.output
        return outcome

    async def _call_tool(self, action: Action, state: PlanState) -> StepOutcome:
        if self.tools is None:
            return StepOutcome("error", error=f"no tool invoker for {action}")
        variables = state.variables()
        arguments = dict(action.values)
        arguments.update({name: expr.evaluate(variables) for name, expr in action.arguments})
        result = await tracing.call_tool(self.tools, action.name, arguments)
        status = str(getattr(result, "status", "error"))
        output = getattr(result, "output", None)
        error = getattr(result, "error", None)
        if status == "ok":
            state.tool[action.name] = output
            return StepOutcome.ok(output)
        if status == "needs_approval":
            return StepOutcome("paused", output, str(error or "the tool call needs approval"))
        if status not in _TOOL_ERRORS:
            error = f"unknown tool status `{status}`: {error}"
        return StepOutcome("error", output, f"{status}: {error}" if error else status)
