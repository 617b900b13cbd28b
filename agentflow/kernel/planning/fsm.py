"""The finite-state-machine planner: load (with every error at once), then run or resume.

A state runs its action, then picks the next state in this order: the first
``conditional_transitions`` entry whose condition holds; else ``condition`` →
``on_true``/``on_false``; else ``on_success``. A failed or timed-out action follows
``on_error`` (after the replanner, if any, declined to retry, escalate or fall back). A final
state runs its action and ends the run. A state listed in ``final_states`` need not be
declared under ``states``: it then runs the built-in step of its name.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentflow.kernel.planning.expressions import CompiledExpression, ExpressionEvalError
from agentflow.kernel.planning.model import (
    Action,
    PlanResult,
    PlanState,
    Snapshot,
    StepExecutor,
    StepOutcome,
    StepRecord,
    ToolInvoker,
)
from agentflow.kernel.planning.parsing import MISSING, Errors, Known, parse_action, parse_timeout
from agentflow.kernel.planning.runtime import (
    ActionRunner,
    AlreadyResumed,
    InMemoryResumeLedger,
    Replanner,
    ResumeError,
    ResumeLedger,
    digest,
    trigger_of,
)
from agentflow.kernel.planning.source import MDict, PlanValidationError, Pos, pos_of

__all__ = ["FSMPlan", "FSMState", "load_fsm"]

DEFAULT_MAX_STEPS = 100
_STATE_KEYS = {
    "action",
    "on_success",
    "on_error",
    "conditional_transitions",
    "condition",
    "on_true",
    "on_false",
    "timeout",
    "description",
}
_TOP_KEYS = {"states", "initial_state", "final_states", "max_steps", "name", "description"}


@dataclass(frozen=True, slots=True)
class Transition:
    target: str
    via: str  # on_success | on_error | on_true | on_false | conditional_transitions[i]
    condition: CompiledExpression | None
    pos: Pos


@dataclass(slots=True)
class FSMState:
    name: str
    action: Action
    pos: Pos = field(default_factory=Pos)
    on_success: Transition | None = None
    on_error: Transition | None = None
    conditional: list[Transition] = field(default_factory=list)
    condition: CompiledExpression | None = None
    on_true: Transition | None = None
    on_false: Transition | None = None
    timeout: float | None = None
    implicit: bool = False
    # A transition or condition of this state is already reported broken: the exit analysis
    # gives it the benefit of the doubt instead of piling up follow-on errors.
    broken: bool = False

    def transitions(self) -> list[Transition]:
        found = [*self.conditional, self.on_true, self.on_false, self.on_success, self.on_error]
        return [t for t in found if t is not None]


def load_fsm(data: Any, *, known: Known | None = None, path: str = "") -> FSMPlan:
    """Build an `FSMPlan` from marked (or plain) data; raise `PlanValidationError`."""
    errors = Errors()
    plan = _parse(data, errors, known or Known(), path)
    if plan is not None:
        _check_graph(plan, errors, path)
    if errors or plan is None:
        raise PlanValidationError(errors.items)
    return plan


def _parse(data: Any, errors: Errors, known: Known, path: str) -> FSMPlan | None:
    prefix = f"{path}." if path else ""
    if not isinstance(data, Mapping):
        errors.add("an FSM definition is a mapping with states and initial_state", pos_of(data, 0))
        return None
    for key in sorted(set(data) - _TOP_KEYS):
        errors.add(f"unknown key `{key}` in an FSM definition", pos_of(data, key), prefix + key)
    raw_states = data.get("states")
    if not isinstance(raw_states, Mapping) or not raw_states:
        errors.add("an FSM needs a non-empty `states` mapping", pos_of(data, "states"))
        raw_states = {}
    finals_raw = data.get("final_states")
    finals: list[str] = []
    if finals_raw is None or finals_raw == []:
        errors.add(
            "no final state: list the states that end the run in `final_states`",
            pos_of(data, "final_states") if "final_states" in data else getattr(data, "pos", Pos()),
            prefix + "final_states",
        )
    elif not isinstance(finals_raw, list) or not all(isinstance(f, str) for f in finals_raw):
        errors.add("`final_states` must be a list of state names", pos_of(data, "final_states"))
    else:
        finals = list(finals_raw)
    states: dict[str, FSMState] = {}
    for name, raw in raw_states.items():
        where = f"{prefix}states.{name}"
        states[name] = _parse_state(str(name), raw, raw_states, errors, known, where)
    for index, name in enumerate(finals):
        if name not in states:
            final_pos = pos_of(finals_raw, index)
            action = parse_action(
                MISSING,
                default_step=name,
                errors=errors,
                known=known,
                pos=final_pos,
                path=f"{prefix}final_states[{index}]",
                owner=f"final state `{name}`",
            )
            states[name] = FSMState(name, action, final_pos, implicit=True)
    initial = data.get("initial_state")
    initial_pos = pos_of(data, "initial_state")
    if not isinstance(initial, str) or not initial:
        errors.add("no `initial_state`", initial_pos or getattr(data, "pos", Pos()))
        initial = ""
    elif initial not in states:
        errors.add(f"`initial_state: {initial}`: no state named `{initial}`", initial_pos)
    max_steps = data.get("max_steps", DEFAULT_MAX_STEPS)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        errors.add("`max_steps` must be a positive integer", pos_of(data, "max_steps"))
        max_steps = DEFAULT_MAX_STEPS
    return FSMPlan(states, initial, tuple(finals), max_steps, _normalise(states, initial, finals))


def _parse_state(
    name: str, raw: Any, parent: Any, errors: Errors, known: Known, where: str
) -> FSMState:
    state_pos = pos_of(parent, name)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.add(f"state `{name}` must be a mapping", state_pos, where)
        return FSMState(name, Action("none"), state_pos)
    for key in sorted(set(raw) - _STATE_KEYS):
        errors.add(f"state `{name}`: unknown key `{key}`", pos_of(raw, key), f"{where}.{key}")
    action = parse_action(
        raw.get("action", MISSING),
        default_step=name,
        errors=errors,
        known=known,
        pos=_vpos(raw, "action") if "action" in raw else state_pos,
        path=f"{where}.action",
        owner=f"state `{name}`",
    )
    state = FSMState(name, action, state_pos)

    def target(key: str, container: Any = raw, via: str | None = None) -> Transition | None:
        if key not in container:
            return None
        value = container[key]
        value_pos = container.value_at(key) if isinstance(container, MDict) else state_pos
        if not isinstance(value, str) or not value:
            errors.add(f"state `{name}`: `{key}` must name a state", value_pos, f"{where}.{key}")
            return None
        return Transition(value, via or key, None, value_pos)

    state.on_success = target("on_success")
    state.on_error = target("on_error")
    state.on_true = target("on_true")
    state.on_false = target("on_false")
    if "condition" in raw:
        state.condition = errors.expression(
            raw["condition"], f"state `{name}`: condition", _vpos(raw, "condition"), where
        )
        if state.on_true is None or state.on_false is None:
            errors.add(
                f"state `{name}`: a `condition` needs both `on_true` and `on_false`",
                pos_of(raw, "condition"),
                f"{where}.condition",
            )
    elif state.on_true or state.on_false:
        errors.add(
            f"state `{name}`: `on_true`/`on_false` without a `condition`",
            pos_of(raw, "on_true" if "on_true" in raw else "on_false"),
            where,
        )
    if state.condition is not None and state.on_true and state.on_false:
        state.on_true = Transition(
            state.on_true.target, "on_true", state.condition, state.on_true.pos
        )
        state.on_false = Transition(
            state.on_false.target, "on_false", state.condition, state.on_false.pos
        )
    before = len(errors.items)
    state.conditional = _parse_conditionals(name, raw, errors, where)
    if "condition" in raw and state.condition is None:
        state.broken = True
    state.broken = state.broken or len(errors.items) > before
    state.timeout = parse_timeout(raw.get("timeout"), errors, _vpos(raw, "timeout"), where)
    return state


def _parse_conditionals(name: str, raw: Any, errors: Errors, where: str) -> list[Transition]:
    items = raw.get("conditional_transitions")
    if items is None:
        return []
    if not isinstance(items, list):
        errors.add(
            f"state `{name}`: `conditional_transitions` must be a list of {{condition, target}}",
            pos_of(raw, "conditional_transitions"),
            where,
        )
        return []
    found: list[Transition] = []
    for index, item in enumerate(items):
        item_path = f"{where}.conditional_transitions[{index}]"
        item_pos = pos_of(items, index)
        if not isinstance(item, Mapping) or set(item) != {"condition", "target"}:
            errors.add(
                f"state `{name}`: a conditional transition has exactly `condition` and `target`",
                item_pos,
                item_path,
            )
            continue
        compiled = errors.expression(
            item["condition"], f"state `{name}`: condition", _vpos(item, "condition"), item_path
        )
        target_name = item["target"]
        if not isinstance(target_name, str) or not target_name:
            errors.add(f"state `{name}`: `target` must name a state", _vpos(item, "target"))
            continue
        if compiled is not None:
            via = f"conditional_transitions[{index}]"
            found.append(Transition(target_name, via, compiled, _vpos(item, "target")))
    return found


def _vpos(container: Any, key: str) -> Pos:
    return container.value_at(key) if isinstance(container, MDict) else Pos()


def _normalise(states: Mapping[str, FSMState], initial: str, finals: list[str]) -> dict[str, Any]:
    def transition(t: Transition | None) -> Any:
        if t is None:
            return None
        return [t.target, t.via, t.condition.source if t.condition else None]

    return {
        "initial": initial,
        "finals": sorted(finals),
        "states": {
            name: {
                "action": s.action.describe(),
                "timeout": s.timeout,
                "transitions": [transition(t) for t in s.transitions()],
            }
            for name, s in sorted(states.items())
        },
    }


# ---------------------------------------------------------------------------- graph


def _check_graph(plan: FSMPlan, errors: Errors, path: str) -> None:
    prefix = f"{path}." if path else ""
    finals = set(plan.final_states)
    for state in plan.states.values():
        where = f"{prefix}states.{state.name}"
        for t in state.transitions():
            if t.target not in plan.states:
                state.broken = True
                errors.add(
                    f"transition `{t.via}: {t.target}`: no state named `{t.target}`",
                    t.pos,
                    f"{where}.{t.via}",
                )
        if state.name in finals and state.transitions():
            errors.add(
                f"final state `{state.name}` has outgoing transitions",
                state.transitions()[0].pos,
                where,
            )
    if plan.initial not in plan.states:
        return
    reachable = _reach(plan, plan.initial)
    for state in plan.states.values():
        if state.name not in reachable and not state.implicit:
            errors.add(
                f"state `{state.name}` is unreachable from `{plan.initial}`",
                state.pos,
                f"{prefix}states.{state.name}",
            )
    exits = {s.name for s in plan.states.values() if s.name in finals or s.broken}
    changed = True
    while changed:  # states from which a final state is reachable
        changed = False
        for state in plan.states.values():
            if state.name not in exits and any(t.target in exits for t in state.transitions()):
                exits.add(state.name)
                changed = True
    reported: set[str] = set()
    for name in sorted(reachable, key=lambda n: plan.states[n].pos):
        if name in exits or name in reported:
            continue
        state = plan.states[name]
        cycle = _cycle_through(plan, name)
        where = f"{prefix}states.{name}"
        if cycle:
            reported.update(cycle)
            loop = " → ".join([*cycle, cycle[0]])
            errors.add(f"cycle without exit: {loop} never reaches a final state", state.pos, where)
        elif not state.transitions():
            errors.add(
                f"state `{name}` is not final and has no transition (dead end)", state.pos, where
            )
        # Any other stuck state only leads into a dead end or a cycle reported above/below.


def _targets(plan: FSMPlan, name: str) -> list[str]:
    state = plan.states.get(name)
    if state is None:
        return []
    return [t.target for t in state.transitions() if t.target in plan.states]


def _reach(plan: FSMPlan, start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in _targets(plan, stack.pop()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycle_through(plan: FSMPlan, start: str) -> list[str]:
    """A shortest cycle through ``start`` (by BFS), or [] when ``start`` is on none."""
    parents: dict[str, str] = {}
    queue = [start]
    seen = {start}
    while queue:
        current = queue.pop(0)
        for nxt in _targets(plan, current):
            if nxt == start:
                cycle = [current]
                while cycle[-1] != start:
                    cycle.append(parents[cycle[-1]])
                return list(reversed(cycle))
            if nxt not in seen:
                seen.add(nxt)
                parents[nxt] = current
                queue.append(nxt)
    return []


# -------------------------------------------------------------------------- running


@dataclass(slots=True)
class FSMPlan:
    states: dict[str, FSMState]
    initial: str
    final_states: tuple[str, ...]
    max_steps: int
    normalised: dict[str, Any]
    kind: str = "fsm"

    @property
    def digest(self) -> str:
        return digest(self.normalised)

    def summary(self) -> str:
        transitions = sum(len(s.transitions()) for s in self.states.values())
        return f"fsm: {len(self.states)} states, {transitions} transitions"

    def actions(self) -> list[tuple[str, Action]]:
        return [(name, s.action) for name, s in self.states.items()]

    async def run(
        self,
        state: PlanState,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        replanner: Replanner | None = None,
        clock: Callable[[], float] | None = None,
    ) -> PlanResult:
        runner = _runner(executor, tools, clock)
        return await _Drive(self, runner, replanner, state, []).go(self.initial, None)

    async def resume(
        self,
        snapshot: Snapshot,
        decision: StepOutcome,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        ledger: ResumeLedger | None = None,
        replanner: Replanner | None = None,
        clock: Callable[[], float] | None = None,
    ) -> PlanResult:
        """Continue a paused run at its state, with ``decision`` as that state's outcome."""
        if snapshot.planner != self.kind or snapshot.plan_digest != self.digest:
            raise ResumeError("the snapshot belongs to another plan")
        if snapshot.node not in self.states:
            raise ResumeError(f"the plan has no state `{snapshot.node}`")
        if not (ledger or _LEDGER).claim(snapshot.token):
            raise AlreadyResumed(f"snapshot {snapshot.token} was already resumed")
        runner = _runner(executor, tools, clock)
        drive = _Drive(self, runner, replanner, PlanState.from_dict(snapshot.data), [])
        drive.steps = snapshot.steps_taken
        return await drive.go(snapshot.node, decision)


_LEDGER = InMemoryResumeLedger()


def _runner(
    executor: StepExecutor | None, tools: ToolInvoker | None, clock: Callable[[], float] | None
) -> ActionRunner:
    return (
        ActionRunner(executor, tools)
        if clock is None
        else ActionRunner(executor, tools, clock=clock)
    )


class _Drive:
    def __init__(
        self,
        plan: FSMPlan,
        runner: ActionRunner,
        replanner: Replanner | None,
        state: PlanState,
        path: list[StepRecord],
    ) -> None:
        self.plan = plan
        self.runner = runner
        self.replanner = replanner
        self.state = state
        self.path = path
        self.steps = 0

    def _result(self, status: str, node: str | None, error: str | None = None) -> PlanResult:
        return PlanResult(status, node, self.path, self.state, None, error)  # type: ignore[arg-type]

    def _pause(self, node: str) -> PlanResult:
        snapshot = Snapshot(
            "fsm", node, self.state.to_dict(), uuid.uuid4().hex, self.plan.digest, self.steps
        )
        return PlanResult("paused", node, self.path, self.state, snapshot)

    async def go(self, current: str, first: StepOutcome | None) -> PlanResult:
        clock = self.runner.clock
        pending = first
        attempt = 1
        while True:
            state_def = self.plan.states[current]
            started = clock()
            if pending is not None:
                outcome, pending = pending, None
                action = {"resumed": True, **state_def.action.describe()}
            else:
                if self.steps >= self.plan.max_steps:
                    return self._result("failed", current, f"step limit {self.plan.max_steps}")
                self.steps += 1
                outcome = await self.runner.run(
                    state_def.action, self.state, state_def.timeout, current
                )
                action = state_def.action.describe()
            record = StepRecord(
                len(self.path), current, action, outcome.status, started, clock(),
                error=outcome.error, output=outcome.output, tokens=outcome.tokens,
                cost_usd=outcome.cost_usd, attempt=attempt,
            )  # fmt: skip
            self.path.append(record)
            if outcome.status == "paused":
                return self._pause(current)
            if outcome.status != "ok" and self.replanner is not None:
                decision = await self.replanner.decide(
                    trigger_of(outcome), current, outcome, attempt
                )
                record.via = decision.strategy if decision.strategy != "continue" else None
                if decision.strategy == "retry":
                    attempt += 1
                    if decision.delay_s > 0:
                        await asyncio.sleep(decision.delay_s)
                    continue
                if decision.strategy == "escalate":
                    return self._pause(current)
                if decision.strategy == "fallback":
                    return self._result("failed", current, f"fallback: {outcome.error}")
            attempt = 1
            if current in self.plan.final_states:
                status = "completed" if outcome.status == "ok" else "failed"
                return self._result(status, current, outcome.error)
            try:
                chosen = self._next(state_def, outcome)
            except ExpressionEvalError as exc:
                record.error = str(exc)
                return self._result("failed", current, f"condition: {exc}")
            if chosen is None:
                reason = outcome.error or "no transition applies"
                return self._result("failed", current, f"{current}: {reason}")
            record.transition = chosen.target
            record.via = chosen.via
            record.condition = chosen.condition.source if chosen.condition else None
            current = chosen.target

    def _next(self, state: FSMState, outcome: StepOutcome) -> Transition | None:
        if outcome.status != "ok":
            return state.on_error
        variables = self.state.variables()
        for transition in state.conditional:
            assert transition.condition is not None
            if transition.condition.test(variables):
                return transition
        if state.condition is not None:
            return state.on_true if state.condition.test(variables) else state.on_false
        return state.on_success
