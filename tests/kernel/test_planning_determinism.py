"""Same input → same path: a property over generated FSMs and behavior trees."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.kernel.planning.behavior_tree import load_behavior_tree
from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import Action, PlanState, StepOutcome

NAMES = ["a", "b", "c", "d", "e", "f"]


class TableExecutor:
    """Outcome of the n-th call of a step comes from a table; yields a step-dependent number
    of times so concurrent branches finish in a shuffled order."""

    def __init__(self, table: dict[str, list[str]], yields: dict[str, int]) -> None:
        self.table = table
        self.yields = yields
        self.counts: dict[str, int] = {}

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        n = self.counts.get(action.name, 0)
        self.counts[action.name] = n + 1
        for _ in range(self.yields.get(action.name, 0)):
            await asyncio.sleep(0)
        outcomes = self.table.get(action.name) or ["ok"]
        status = outcomes[n % len(outcomes)]
        state.state[f"{action.name}_calls"] = n + 1
        state.state["last"] = action.name
        if status == "paused":
            return StepOutcome("paused")
        return StepOutcome.ok() if status == "ok" else StepOutcome.failed("scripted")


outcome_lists = st.lists(st.sampled_from(["ok", "ok", "error", "paused"]), min_size=1, max_size=3)
tables = st.dictionaries(st.sampled_from(NAMES), outcome_lists)
yield_counts = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3))


@st.composite
def fsms(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, len(NAMES)))
    names = NAMES[:count]
    targets = [*names, "end_ok", "end_bad"]
    states: dict[str, Any] = {}
    for index, name in enumerate(names):
        state: dict[str, Any] = {"on_success": names[index + 1] if index + 1 < count else "end_ok"}
        if draw(st.booleans()):
            state["on_error"] = draw(st.sampled_from(targets))
        conditionals = draw(
            st.lists(
                st.tuples(st.sampled_from(names), st.integers(1, 3), st.sampled_from(targets)),
                max_size=2,
            )
        )
        if conditionals:
            state["conditional_transitions"] = [
                {"condition": f"has(state.{step}_calls) && state.{step}_calls >= {n}", "target": t}
                for step, n, t in conditionals
            ]
        states[name] = state
    return {
        "states": states,
        "initial_state": names[0],
        "final_states": ["end_ok", "end_bad"],
        "max_steps": 25,
    }


def nodes(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    action = st.sampled_from(NAMES).map(lambda n: {"type": "action", "step": n})
    condition = st.tuples(st.sampled_from(NAMES), st.integers(1, 2)).map(
        lambda p: {
            "type": "condition",
            "check": f"has(state.{p[0]}_calls) && state.{p[0]}_calls >= {p[1]}",
        }
    )
    if depth == 0:
        return st.one_of(action, condition)
    child = nodes(depth - 1)
    children = st.lists(child, min_size=1, max_size=3)
    composite = st.one_of(
        st.tuples(st.sampled_from(["sequence", "selector"]), children).map(
            lambda p: {"type": p[0], "children": p[1]}
        ),
        st.tuples(children, st.sampled_from(["all", "any", 1])).map(
            lambda p: {"type": "parallel", "success_policy": p[1], "children": p[0]}
        ),
        st.tuples(st.sampled_from(NAMES), child, child).map(
            lambda p: {
                "type": "conditional_selector",
                "conditions": [
                    {"expression": f"state.last == '{p[0]}'", "child": p[1]},
                    {"default": True, "child": p[2]},
                ],
            }
        ),
    )
    return st.one_of(action, condition, composite)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(definition=fsms(), table=tables, yields=yield_counts)
def test_same_fsm_and_input_give_the_same_path(
    definition: dict[str, Any], table: dict[str, list[str]], yields: dict[str, int]
) -> None:
    plan = load_fsm(definition)

    async def once() -> Any:
        result = await plan.run(PlanState(message="m"), TableExecutor(table, yields))
        return result.signature(), result.state.to_dict()

    first, second = asyncio.run(once()), asyncio.run(once())
    assert first == second


@SETTINGS
@given(root=nodes(3), table=tables, yields=yield_counts)
def test_same_tree_and_input_give_the_same_path(
    root: dict[str, Any], table: dict[str, list[str]], yields: dict[str, int]
) -> None:
    plan = load_behavior_tree({"root": root})

    async def once() -> Any:
        result = await plan.run(PlanState(message="m"), TableExecutor(table, yields))
        return result.signature()

    assert asyncio.run(once()) == asyncio.run(once())
