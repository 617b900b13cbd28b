"""What plan-step and tool-call spans cost per step: tracing off (no SDK) and on.

    .venv/bin/python bench/plan_step_tracing.py [--runs 20000]     # prints one JSON object

`ActionRunner.run` on a zero-work step (an executor that returns at once) and a zero-work
tool call, three ways, interleaved in rounds so machine load hits each alike:

* ``untraced``: `ActionRunner._limited`, the body `run` had before spans (the floor);
* ``off``: `run` with no SDK installed (the OpenTelemetry API's proxy; nothing recorded);
* ``on``: `run` with an SDK `TracerProvider` (always sampled, recording, no exporter: the
  cost of making the spans, not of shipping them).

and the support pipeline's hot path, `CompiledFSM.run` over five zero-work steps
(``compiled_off``, ``compiled_on``; per step, the walk's time divided by five).

Medians and p95 in microseconds per step.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from agentflow.kernel import tracing
from agentflow.kernel.planning.compiled import CompiledFSM, compile_fsm
from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import Action, PlanState, StepOutcome
from agentflow.kernel.planning.runtime import ActionRunner
from agentflow.kernel.planning.source import parse_source

STEPS = ["classify", "search", "generate", "evaluate", "deliver"]
PLAN = "\n".join(
    [
        "states:",
        *(
            f"  {step}: {{action: {{step: {step}}}, on_success: {nxt}}}"
            for step, nxt in itertools.pairwise(STEPS)
        ),
        f"  {STEPS[-1]}: {{action: {{step: {STEPS[-1]}}}}}",
        f"initial_state: {STEPS[0]}",
        f"final_states: [{STEPS[-1]}]",
    ]
)


class _Instant:
    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        return StepOutcome.ok()


class _Result:
    status = "ok"
    output = None
    error = None


async def _tool(tool_id: str, arguments: dict[str, Any]) -> _Result:
    return _Result()


async def _per_step(runner: ActionRunner, action: Action, traced: bool, n: int) -> float:
    state = PlanState()
    run = runner.run if traced else (lambda a, s, limit, node: runner._limited(a, s, limit, node))
    started = time.perf_counter()
    for _ in range(n):
        await run(action, state, None, "node")
    return (time.perf_counter() - started) / n * 1e6


async def _nothing(target: None, state: PlanState) -> None:
    return None


def _compiled() -> CompiledFSM[None]:
    compiled = compile_fsm(load_fsm(parse_source(PLAN)), dict.fromkeys(STEPS, _nothing))
    assert compiled is not None
    return compiled


async def _per_compiled_step(compiled: CompiledFSM[None], n: int) -> float:
    clock = time.perf_counter
    started = clock()
    for _ in range(n):
        await compiled.run(None, PlanState(), clock, lambda: (0, 0.0), 0.0)
    return (clock() - started) / (n * len(STEPS)) * 1e6


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 3),
        "p95_us": round(ordered[int(len(ordered) * 0.95) - 1], 3),
    }


async def main(runs: int, rounds: int) -> dict[str, Any]:
    runner = ActionRunner(_Instant(), _tool)
    actions = {"step": Action("step", "classify"), "tool": Action("tool", "order_lookup")}
    provider = TracerProvider()
    samples: dict[str, list[float]] = {
        f"{kind}_{mode}": [] for kind in actions for mode in ("untraced", "off", "on")
    }
    samples.update({"compiled_off": [], "compiled_on": []})
    compiled = _compiled()
    for _ in range(rounds):
        trace._TRACER_PROVIDER = None
        samples["compiled_off"].append(await _per_compiled_step(compiled, runs // 5))
        trace._TRACER_PROVIDER = provider
        tracing.tracer = trace.get_tracer("agentflow")
        samples["compiled_on"].append(await _per_compiled_step(compiled, runs // 5))
        for kind, action in actions.items():
            trace._TRACER_PROVIDER = None  # off: the API's proxy, nothing installed
            tracing.tracer = trace.get_tracer("agentflow")
            assert not tracing.active()
            samples[f"{kind}_untraced"].append(await _per_step(runner, action, False, runs))
            samples[f"{kind}_off"].append(await _per_step(runner, action, True, runs))
            trace._TRACER_PROVIDER = provider  # on
            tracing.tracer = trace.get_tracer("agentflow")
            assert tracing.active()
            samples[f"{kind}_on"].append(await _per_step(runner, action, True, runs))
    trace._TRACER_PROVIDER = None
    return {
        "python": platform.python_version(),
        "runs_per_round": runs,
        "rounds": rounds,
        **{name: _summary(values) for name, values in samples.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs, args.rounds)), indent=1))
