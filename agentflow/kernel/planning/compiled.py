"""An FSM compiled against a fixed table of step functions: the pipeline's hot path.

`FSMPlan.run` is general (tool calls, sub-agents, replanning, snapshots) and builds a
`StepOutcome` and a `StepRecord` per step. A plan whose every state runs a built-in step (or
nothing) needs none of that: `compile_fsm` resolves each state's step function, transitions
and conditions once, when the agent is built, and `CompiledFSM.run` walks them, recording the
path directly as `PlanStep` tuples. The walk follows `FSMPlan` exactly (a test compares both):
the first conditional transition that holds, else ``condition`` → ``on_true``/``on_false``,
else ``on_success``; a failing or timed-out step follows ``on_error``; a final state runs its
step and ends the run; ``max_steps`` bounds the walk.

A condition may come with a native twin (`NativeCondition`, by its exact source): a plain
Python test of the state that answers when it can and returns None when CEL must decide (a
missing or oddly-typed value), so the outcome, errors included, is the CEL one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from agentflow.kernel import tracing
from agentflow.kernel.llm.base import BudgetExceeded
from agentflow.kernel.planning.expressions import CompiledExpression, ExpressionEvalError
from agentflow.kernel.planning.fsm import FSMPlan, FSMState, Transition
from agentflow.kernel.planning.model import FailsTheMessage, PlanState
from agentflow.kernel.results import PlanStep, StepOutcomeName

__all__ = ["SKIPPED", "CompiledFSM", "CompiledRun", "NativeCondition", "compile_fsm"]

T = TypeVar("T")
StepFn = Callable[[T, PlanState], Awaitable[Any]]
# (tokens, cost in USD) spent so far by the run: a step's share is the difference.
Meter = Callable[[], tuple[int, float]]
# A condition's outcome computed in Python, or None to let its CEL expression decide.
NativeCondition = Callable[[PlanState], bool | None]
Natives = Mapping[str, NativeCondition]

SKIPPED = "skipped"  # what a step returns when the plan never produced its input


@dataclass(frozen=True, slots=True)
class _Edge:
    target: str
    via: str
    condition: CompiledExpression | None
    native: NativeCondition | None
    # (transition, via, condition) as the path records them, made once.
    described: tuple[str, str, str | None]


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
    native: NativeCondition | None  # the twin of ``condition``
    on_true: _Edge | None
    on_false: _Edge | None
    unconditional: bool  # leaves by on_success alone: nothing to evaluate


@dataclass(slots=True)
class CompiledRun:
    completed: bool
    node: str
    path: list[PlanStep]
    error: str | None = None


def _native(condition: CompiledExpression | None, natives: Natives) -> NativeCondition | None:
    return None if condition is None else natives.get(condition.source)


def _edge(transition: Transition | None, natives: Natives) -> _Edge | None:
    if transition is None:
        return None
    condition = transition.condition
    source = None if condition is None else condition.source
    return _Edge(
        transition.target, transition.via, condition, _native(condition, natives),
        (transition.target, transition.via, source),
    )  # fmt: skip


def _node(
    state: FSMState, steps: Mapping[str, StepFn[T]], final: bool, natives: Natives
) -> _Node[T] | None:
    action = state.action
    if action.kind == "none":
        step, label = None, "none"
    elif action.kind == "step" and action.name in steps:
        step, label = steps[action.name], f"step:{action.name}"
    else:
        return None
    conditional = tuple(e for e in (_edge(t, natives) for t in state.conditional) if e)
    return _Node(
        state.name, label, step, state.timeout, final, _edge(state.on_success, natives),
        _edge(state.on_error, natives), conditional, state.condition,
        _native(state.condition, natives), _edge(state.on_true, natives),
        _edge(state.on_false, natives), not conditional and state.condition is None,
    )  # fmt: skip


def compile_fsm(
    plan: FSMPlan, steps: Mapping[str, StepFn[T]], natives: Natives | None = None
) -> CompiledFSM[T] | None:
    """The plan compiled against ``steps``, or None when a state does anything else (a tool
    call, a sub-agent, a pause): such plans run through `FSMPlan.run`. ``natives`` maps a
    condition's source to its native twin."""
    finals = set(plan.final_states)
    nodes: dict[str, _Node[T]] = {}
    for name, state in plan.states.items():
        node = _node(state, steps, name in finals, natives or {})
        if node is None:
            return None
        nodes[name] = node
    return CompiledFSM(nodes, plan.initial, plan.max_steps)


_NO_EDGE: tuple[None, None, None] = (None, None, None)
_tuple_new = tuple.__new__


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
        self._traced: dict[str, _Node[T]] | None = None

    def _traced_nodes(self) -> dict[str, _Node[T]]:
        """The nodes with each step inside a plan-step span (made once, when tracing is on)."""
        if self._traced is None:
            self._traced = {
                name: node if node.step is None else replace(node, step=_traced(node))
                for name, node in self._nodes.items()
            }
        return self._traced

    async def run(
        self, target: T, state: PlanState, clock: Callable[[], float], meter: Meter, origin: float
    ) -> CompiledRun:
        """Walk the plan from its initial state; times in the path are ms since ``origin``."""
        path: list[PlanStep] = []
        # Spans only when an SDK records them: off, the walk is what it was without tracing.
        nodes = self._traced_nodes() if tracing.active() else self._nodes
        node = nodes[self._initial]
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
                except FailsTheMessage:
                    raise
                except Exception as exc:  # a step's bug is a failed step, not a crashed message
                    outcome, error = _failure(exc, node)
            finished = clock()
            spent_tokens, spent_cost = meter()
            edge: _Edge | None
            # A final state has no edge: the walk ends there.
            if node.final:
                edge = None
            elif error is not None:
                edge = node.on_error
            elif node.unconditional:
                edge = node.on_success
            else:
                try:
                    edge = _choose(node, state)
                except ExpressionEvalError as exc:
                    edge, error = None, str(exc)
            transition, via, condition = _NO_EDGE if edge is None else edge.described
            # PlanStep's fields in order, made as its generated __new__ would, minus a frame.
            path.append(_tuple_new(PlanStep, (
                node.name, node.label, outcome, (started - origin) * 1000.0,
                (finished - started) * 1000.0, transition, via, condition, error,
                spent_tokens - tokens, spent_cost - cost,
            )))  # fmt: skip
            tokens, cost = spent_tokens, spent_cost
            if node.final:
                return CompiledRun(error is None, node.name, path, error)
            if edge is None:
                return CompiledRun(False, node.name, path, error or "no transition applies")
            node = nodes[edge.target]
        return CompiledRun(False, node.name, path, f"step limit {self._max_steps}")


def _traced(node: _Node[T]) -> StepFn[T]:
    """``node``'s step inside an ``agentflow.plan_step`` span with its outcome, named as the
    path names it (success, skipped, error)."""
    step = node.step
    assert step is not None

    async def traced(target: T, state: PlanState) -> Any:
        with tracing.step_span(node.name, node.label) as span:
            try:
                output = await step(target, state)
            except BaseException as exc:  # a timeout cancels the step: an error as well
                tracing.record_outcome(span, "error", f"{type(exc).__name__}: {exc}")
                raise
            tracing.record_outcome(span, "skipped" if output is SKIPPED else "success")
            return output

    return traced


def _choose(node: _Node[Any], state: PlanState) -> _Edge | None:
    """The first conditional edge that holds, else on_true/on_false, else on_success."""
    variables: dict[str, Any] | None = None  # built once, only if a CEL expression runs
    for edge in node.conditional:
        holds = None if edge.native is None else edge.native(state)
        if holds is None:
            assert edge.condition is not None
            variables = variables or state.variables()
            holds = edge.condition.test(variables)
        if holds:
            return edge
    if node.condition is None:
        return node.on_success
    holds = None if node.native is None else node.native(state)
    if holds is None:
        holds = node.condition.test(variables or state.variables())
    return node.on_true if holds else node.on_false
