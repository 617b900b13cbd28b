"""Planner overhead per transition: FSM and behavior tree vs a plain-asyncio floor vs LangGraph.

    .venv/bin/python bench/planner_overhead.py [--runs 3000]     # prints one JSON object

Every variant runs the same six-step graph with the same zero-work step (an ``async`` function
that returns at once): classify → search → generate → evaluate → (a CEL condition on the
response's confidence) → deliver. What is measured is what the planner adds per transition:
choosing the next state (CEL conditions included), the per-step timeout wrapper where
configured, the recorded path (a `StepRecord` per step with timestamps) and the result.

* ``floor``: the six calls in a plain ``for`` loop with a Python ``if`` for the condition.
* ``fsm``: `FSMPlan.run` over the same graph; ``fsm_with_timeouts`` with a per-state timeout.
* ``behavior_tree``: a sequence of the same actions with a condition node and a selector.
* ``langgraph``: a `StateGraph` with the same nodes and a conditional edge, when ``langgraph``
  is importable (it is in the ``bench`` extra); otherwise the column says why it is missing.

Runs are interleaved in rounds so machine load hits every variant alike; per-run times are
divided by the run's transitions; medians and p95 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.kernel.planning.behavior_tree import load_behavior_tree
from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import Action, PlanState, StepOutcome

STEPS = ["classify", "search", "generate", "evaluate", "deliver"]
TRANSITIONS = 6  # five steps + the final state's own step (recorded like any other)

FSM_DEFINITION: dict[str, Any] = {
    "states": {
        "classify": {"on_success": "search", "on_error": "human_review"},
        "search": {"on_success": "generate", "on_error": "generate"},
        "generate": {"on_success": "evaluate", "on_error": "human_review"},
        "evaluate": {
            "condition": "response.confidence >= 0.6",
            "on_true": "deliver",
            "on_false": "human_review",
        },
    },
    "initial_state": "classify",
    "final_states": ["deliver", "human_review"],
}
BT_DEFINITION: dict[str, Any] = {
    "root": {
        "type": "sequence",
        "children": [
            {"type": "action", "step": "classify"},
            {"type": "action", "step": "search"},
            {"type": "action", "step": "generate"},
            {"type": "action", "step": "evaluate"},
            {
                "type": "selector",
                "children": [
                    {
                        "type": "sequence",
                        "children": [
                            {"type": "condition", "check": "response.confidence >= 0.6"},
                            {"type": "action", "step": "deliver"},
                        ],
                    },
                    {"type": "action", "step": "human_review"},
                ],
            },
        ],
    }
}


async def step(name: str, state: PlanState) -> StepOutcome:
    if name == "generate":
        state.response["confidence"] = 0.9
    return StepOutcome.ok()


class Executor:
    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        return await step(action.name, state)


def with_timeouts(definition: dict[str, Any]) -> dict[str, Any]:
    states = {k: {**v, "timeout": "5s"} for k, v in definition["states"].items()}
    return {**definition, "states": states}


async def floor_run() -> int:
    state = PlanState()
    for name in STEPS[:4]:
        await step(name, state)
    await step("deliver" if state.response["confidence"] >= 0.6 else "human_review", state)
    return 5


def langgraph_runner() -> tuple[Callable[[], Awaitable[int]] | None, str]:
    try:
        from langgraph.graph import END, START, StateGraph
    except ImportError as exc:
        return None, f"langgraph not importable ({exc}); pip install -e '.[bench]'"
    from typing import TypedDict

    class State(TypedDict):
        confidence: float

    def node(name: str) -> Callable[[State], Awaitable[dict[str, Any]]]:
        async def run(state: State) -> dict[str, Any]:
            return {"confidence": 0.9} if name == "generate" else {}

        return run

    graph = StateGraph(State)
    for name in [*STEPS, "human_review"]:
        graph.add_node(name, node(name))
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "search")
    graph.add_edge("search", "generate")
    graph.add_edge("generate", "evaluate")
    graph.add_conditional_edges(
        "evaluate",
        lambda s: "deliver" if s["confidence"] >= 0.6 else "human_review",
        ["deliver", "human_review"],
    )
    graph.add_edge("deliver", END)
    graph.add_edge("human_review", END)
    app = graph.compile()

    async def run() -> int:
        await app.ainvoke({"confidence": 0.0})
        return 5

    return run, "ok"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p95_us": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "runs": len(ordered),
    }


async def main(runs: int) -> dict[str, Any]:
    fsm = load_fsm(FSM_DEFINITION)
    fsm_timeouts = load_fsm(with_timeouts(FSM_DEFINITION))
    tree = load_behavior_tree(BT_DEFINITION)
    executor = Executor()

    async def run_fsm() -> int:
        result = await fsm.run(PlanState(), executor)
        return len(result.path)

    async def run_fsm_timeouts() -> int:
        result = await fsm_timeouts.run(PlanState(), executor)
        return len(result.path)

    async def run_tree() -> int:
        result = await tree.run(PlanState(), executor)
        return len(result.path)

    variants: dict[str, Callable[[], Awaitable[int]]] = {
        "floor": floor_run,
        "fsm": run_fsm,
        "fsm_with_timeouts": run_fsm_timeouts,
        "behavior_tree": run_tree,
    }
    lang, lang_note = langgraph_runner()
    if lang is not None:
        variants["langgraph"] = lang
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm-up (CEL parser, caches)
        for _ in range(50):
            await run()
    rounds = 10
    for _ in range(rounds):
        for name, run in variants.items():
            for _ in range(max(runs // rounds, 1)):
                started = time.perf_counter_ns()
                transitions = await run()
                elapsed = (time.perf_counter_ns() - started) / 1000
                samples[name].append(elapsed / max(transitions, 1))
    report: dict[str, Any] = {
        "benchmark": "planner_overhead",
        "unit": "microseconds per transition",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "graph": "classify → search → generate → evaluate → [CEL] deliver | human_review",
        "results": {name: summary(values) for name, values in samples.items()},
    }
    floor = report["results"]["floor"]["median_us"]
    report["overhead_over_floor_median_us"] = {
        name: round(values["median_us"] - floor, 2)
        for name, values in report["results"].items()
        if name != "floor"
    }
    if lang is None:
        report["results"]["langgraph"] = {"skipped": lang_note}
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="runs per variant")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs)), indent=2))
