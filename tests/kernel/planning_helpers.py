"""Scripted stand-ins for planner tests: a step executor and a tool invoker that record calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentflow.kernel.planning.model import Action, PlanState, StepOutcome

FIXTURES = Path(__file__).parent / "planning_fixtures"

Script = Callable[[PlanState], StepOutcome | dict[str, Any] | None] | StepOutcome | dict[str, Any]


class ScriptedExecutor:
    """Runs each action from a script keyed by its name.

    A script entry is a `StepOutcome`, a dict merged into ``state.state`` (an ok outcome whose
    output is the dict), or a function of the state returning either. Unscripted actions
    succeed with no output. ``delay`` (seconds) is awaited before each action.
    """

    def __init__(self, script: dict[str, Script] | None = None, *, delay: float = 0.0) -> None:
        self.script = dict(script or {})
        self.calls: list[str] = []
        self.delay = delay

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        self.calls.append(action.name)
        if self.delay:
            await asyncio.sleep(self.delay)
        entry = self.script.get(action.name)
        result = entry(state) if callable(entry) else entry
        if isinstance(result, StepOutcome):
            return result
        if isinstance(result, dict):
            if action.kind != "agent":
                state.state.update(result)
            return StepOutcome.ok(result)
        return StepOutcome.ok()


@dataclass
class ToolResult:
    status: str
    output: Any = None
    error: Any = None


class ScriptedTools:
    def __init__(self, results: dict[str, ToolResult]) -> None:
        self.results = results
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, tool_id: str, arguments: dict[str, Any]) -> ToolResult:
        self.calls.append((tool_id, arguments))
        return self.results.get(tool_id, ToolResult("error", error="no such tool"))
