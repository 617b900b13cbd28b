"""An FSM compiled against a fixed table of step functions: the pipeline's hot path.

`FSMPlan.run` is general (tool calls, sub-agents, replanning, snapshots) and builds a
`StepOutcome` and a `StepRecord` per step. A plan whose every state runs a built-in step (or
nothing) needs none of that: `compile_fsm` resolves each state's step function, transitions
and conditions once, when the agent is built, and `CompiledFSM.run` walks them, recording the
path directly as `PlanStep` tuples. The walk follows `FSMPlan` exactly (a test compares both):
the first conditional transition that holds, else ``condition`` → ``on_true``/``on_false``,
else ``on_success``; a failing or timed-out step follows ``on_error``; a final state runs its
step and ends the run; ``max_steps`` bounds the walk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agentflow.kernel.llm.base import BudgetExceeded
from agentflow.kernel.planning.expressions import CompiledExpression, ExpressionEvalError
from agentflow.kernel.planning.fsm import FSMPlan, FSMState, Transition
from agentflow.kernel.planning.model import PlanState
from agentflow.kernel.results import PlanStep, StepOutcomeName

__all__ = ["SKIPPED", "CompiledFSM", "CompiledRun", "compile_fsm"]

T = TypeVar("T")
StepFn = Callable[[T, PlanState], Awaitable[Any]]
# (tokens, cost in USD) spent so far by the run: a step's share is the difference.
Meter = Callable[[], tuple[int, float]]

SKIPPED = "skipped"  # what a step returns when the plan never produced its input


@dataclass(frozen=True, slots=True)
class _Edge:
    target: str
    via: str
    condition: CompiledExpression | None


@dataclass(frozen=True, slots=True)
class _Node(Generic[T]):
    name: str
    label: str  # "step:classify" or "none"
    step: StepFn[T] | None
    timeout: float | None
    final: bool
    on_success: _Edge | None
    on_error: _Edge | None
    conditional: tuple[_Edge, ...]
    condition: CompiledExpression | None
    on_true: _Edge | None
    on_false: _Edge | None


@dataclass(slots=True)
class CompiledRun:
    completed: bool
    node: str
    path: list[PlanStep]
    error: str | None = None


def _edge(transition: Transition | None) -> _Edge | None:
    if transition is None:
        return None
    return _Edge(transition.target, transition.via, transition.condition)


def _node(state: FSMState, steps: Mapping[str, StepFn[T]], final: bool) -> _Node[T] | None:
    action = state.action
    if action.kind == "none":
        step, label = None, "none"
    elif action.kind == "step" and action.name in steps:
        step, label = steps[action.name], f"step:{action.name}"
    else:
        return None
    return _Node(
        state.name, label, step, state.timeout, final, _edge(state.on_success),
        _edge(state.on_error), tuple(e for e in map(_edge, state.conditional) if e),
        state.condition, _edge(state.on_true), _edge(state.on_false),
    )  # fmt: skip


def compile_fsm(plan: FSMPlan, steps: Mapping[str, StepFn[T]]) -> CompiledFSM[T] | None:
    """The plan compiled against ``steps``, or None when a state does anything else (a tool
    call, a sub-agent, a pause): such plans run through `FSMPlan.run`."""
    finals = set(plan.final_states)
    nodes: dict[str, _Node[T]] = {}
    for name, state in plan.states.items():
        node = _node(state, steps, name in finals)
        if node is None:
            return None
        nodes[name] = node
    return CompiledFSM(nodes, plan.initial, plan.max_steps)


def _failure(exc: BaseException, node: _Node[Any]) -> tuple[StepOutcomeName, str]:
    """(outcome, error) of a step that raised, worded as `ActionRunner` words them."""
    if isinstance(exc, TimeoutError):
        return "error", f"{node.label} took longer than {node.timeout:g}s"
    if isinstance(exc, BudgetExceeded):
        return "error", f"budget: {exc}"
    return "error", f"{type(exc).__name__}: {exc}"


class CompiledFSM(Generic[T]):
    def __init__(self, nodes: dict[str, _Node[T]], initial: str, max_steps: int) -> None:
        self._nodes = nodes
        self._initial = initial
        self._max_steps = max_steps

    async def run(
        self, target: T, state: PlanState, clock: Callable[[], float], meter: Meter, origin: float
    ) -> CompiledRun:
        """Walk the plan from its initial state; times in the path are ms since ``origin``."""
        path: list[PlanStep] = []
        node = self._nodes[self._initial]
        tokens, cost = meter()
        for _ in range(self._max_steps):
            started = clock()
            outcome: StepOutcomeName = "success"
            error: str | None = None
            step = node.step
            if step is not None:  # inline, not a helper coroutine: this runs per step
                try:
                    if node.timeout is None:
                        output = await step(target, state)
                    else:
                        async with asyncio.timeout(node.timeout):
                            output = await step(target, state)
                    if output is SKIPPED:
                        outcome = "skipped"
                except Exception as exc:  # a step's bug is a failed step, not a crashed message
                    outcome, error = _failure(exc, node)
            finished = clock()
            spent_tokens, spent_cost = meter()
            edge: _Edge | None = None
            if not node.final:
                try:
                    edge = _choose(node, state) if error is None else node.on_error
                except ExpressionEvalError as exc:
                    error = str(exc)
            path.append(PlanStep(
                node.name, node.label, outcome, (started - origin) * 1000.0,
                (finished - started) * 1000.0, *_described(edge), error,
                spent_tokens - tokens, spent_cost - cost,
            ))  # fmt: skip
            tokens, cost = spent_tokens, spent_cost
            if node.final:
                return CompiledRun(error is None, node.name, path, error)
            if edge is None:
                return CompiledRun(False, node.name, path, error or "no transition applies")
            node = self._nodes[edge.target]
        return CompiledRun(False, node.name, path, f"step limit {self._max_steps}")


def _choose(node: _Node[Any], state: PlanState) -> _Edge | None:
    if not node.conditional and node.condition is None:
        return node.on_success
    variables = state.variables()
    for edge in node.conditional:
        assert edge.condition is not None
        if edge.condition.test(variables):
            return edge
    if node.condition is not None:
        return node.on_true if node.condition.test(variables) else node.on_false
    return node.on_success


def _described(edge: _Edge | None) -> tuple[str | None, str | None, str | None]:
    """(transition, via, condition) of the edge taken, as the path records them."""
    if edge is None:
        return None, None, None
    return edge.target, edge.via, None if edge.condition is None else edge.condition.source
