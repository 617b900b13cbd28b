"""The LLM planner: the model proposes a JSON plan, deterministic scaffolding runs it.

Configuration (``type: llm``)::

    type: llm
    model: gpt-4o-mini            # optional: the provider's default otherwise
    max_steps: 10
    actions: [classify, {tool: order_lookup}, {agent: triage_agent}]   # the only allowed ones
    goal: "Answer the customer"   # optional; the message is always included
    template: |                   # optional; {{.goal}} {{.actions}} {{.state}} {{.schema}}
      ...
    on_invalid: fallback          # or: human
    fallback: {type: fsm, definition: ...}

The model's answer must be ``{"steps": [{"action": <allowed name>, "arguments": {...},
"on_failure": "stop" | "continue" | "escalate"}]}`` with at most ``max_steps`` steps. Its
arguments are JSON data, never expressions. An invalid answer is sent back once with the list
of problems ("repair"); a second invalid answer runs the configured fallback plan or pauses
the run for a human, who may answer with a plan of their own (`LLMPlanner.run_plan_json`).

A valid plan is compiled into a linear FSM (step i → step i+1; failure → stop, next step or a
human pause) and run by the FSM runtime, so the same plan JSON always gives the same
execution, and the path, timeouts and resumes behave as for any FSM.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentflow.kernel.llm.base import ChatMessage, LLMError, LLMProvider, LLMResponse
from agentflow.kernel.planning.fsm import FSMPlan, load_fsm
from agentflow.kernel.planning.model import (
    PlanResult,
    PlanState,
    Snapshot,
    StepExecutor,
    StepRecord,
    ToolInvoker,
)
from agentflow.kernel.planning.parsing import Errors, Known
from agentflow.kernel.planning.runtime import Replanner, digest
from agentflow.kernel.planning.source import PlanError, PlanValidationError, Pos, pos_of

__all__ = ["PLAN_SCHEMA", "LLMPlanner", "PlanProblems", "build_llm_planner", "check_plan_json"]

ON_FAILURE = ("stop", "continue", "escalate")
PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["steps"],
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["action"],
                "properties": {
                    "action": {"type": "string"},
                    "arguments": {"type": "object"},
                    "on_failure": {"enum": list(ON_FAILURE)},
                },
            },
        },
        "reason": {"type": "string"},
    },
}
DEFAULT_TEMPLATE = """\
You plan the steps of a support agent. Goal: {{.goal}}
The user's message and what is known so far: {{.state}}
Allowed actions (use only these names): {{.actions}}
Use at most {{.max_steps}} steps. Answer with JSON only, in this exact format: {{.schema}}"""
_KEYS = {
    "type",
    "model",
    "max_steps",
    "actions",
    "goal",
    "template",
    "on_invalid",
    "fallback",
    "max_tokens",
    "deterministic_scaffolding",
}


class PlanProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(slots=True)
class LLMPlanner:
    actions: dict[str, str]  # name -> kind (step | tool | agent)
    max_steps: int = 10
    model: str | None = None
    goal: str = "answer the user's message"
    template: str = DEFAULT_TEMPLATE
    on_invalid: str = "human"
    fallback: Any = None  # FSMPlan | BehaviorTreePlan | None
    max_tokens: int = 400
    kind: str = "llm"
    known: Known = field(default_factory=Known)

    def summary(self) -> str:
        fallback = f", fallback {self.fallback.kind}" if self.fallback is not None else ""
        return (
            f"llm: {len(self.actions)} allowed actions, at most {self.max_steps} steps, "
            f"on invalid → {self.on_invalid}{fallback}"
        )

    # ------------------------------------------------------------------ prompting

    def prompt(self, state: PlanState) -> list[ChatMessage]:
        values = {
            "goal": self.goal,
            "actions": ", ".join(f"{name} ({kind})" for name, kind in sorted(self.actions.items())),
            "state": json.dumps(
                {"message": state.message, "intent": state.intent, "user": state.user},
                sort_keys=True,
                default=str,
            ),
            "schema": json.dumps(PLAN_SCHEMA, sort_keys=True),
            "max_steps": str(self.max_steps),
            "message": state.message,
        }

        def fill(match: re.Match[str]) -> str:
            return values.get(match.group(1), match.group(0))

        text = re.sub(r"\{\{\s*\.?(\w+)\s*\}\}", fill, self.template)
        return [
            ChatMessage("system", "You output a JSON plan and nothing else."),
            ChatMessage("user", text),
        ]

    def repair_prompt(
        self, state: PlanState, answer: str, problems: list[str]
    ) -> list[ChatMessage]:
        return [
            *self.prompt(state),
            ChatMessage("assistant", answer),
            ChatMessage(
                "user",
                "That plan is invalid: " + "; ".join(problems) + ". Answer with the corrected "
                "JSON plan only.",
            ),
        ]

    # ------------------------------------------------------------------ checking

    def check(self, answer: str | Mapping[str, Any]) -> list[dict[str, Any]]:
        """The plan's steps, or `PlanProblems` listing everything wrong with it."""
        return check_plan_json(answer, self.actions, self.max_steps)

    def compile(self, steps: list[dict[str, Any]]) -> FSMPlan:
        """The linear FSM a checked plan runs as (same steps → same FSM)."""
        names = [f"step_{i + 1}_{s['action']}" for i, s in enumerate(steps)]
        states: dict[str, Any] = {}
        for index, (name, step) in enumerate(zip(names, steps, strict=True)):
            following = names[index + 1] if index + 1 < len(names) else "done"
            kind = self.actions[step["action"]]
            action: Any = {kind: step["action"]}
            if kind == "tool":
                action["arguments"] = {}
            states[name] = {"action": action, "on_success": following}
            policy = step.get("on_failure", "stop")
            if policy == "continue":
                states[name]["on_error"] = following
            elif policy == "escalate":
                states[name]["on_error"] = "escalated"
        definition = {
            "states": {
                **states,
                "escalated": {"action": {"human": "a planned step failed"}},
                "done": {"action": None},
            },
            "initial_state": names[0],
            "final_states": ["done", "escalated"],
            "max_steps": len(names) + 1,
        }
        plan = load_fsm(_prune_unused(definition))
        # Tool arguments from the plan are literal data, bound after compilation.
        for name, step in zip(names, steps, strict=True):
            state = plan.states[name]
            if state.action.kind == "tool":
                values = tuple(
                    sorted((str(k), v) for k, v in (step.get("arguments") or {}).items())
                )
                state.action = type(state.action)("tool", state.action.name, (), values)
        plan.normalised = {"llm_plan": steps}
        return plan

    # ------------------------------------------------------------------ running

    async def run(
        self,
        state: PlanState,
        llm: LLMProvider,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        replanner: Replanner | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> PlanResult:
        records: list[StepRecord] = []
        problems: list[str] = []
        answer = ""
        for attempt in (1, 2):
            messages = (
                self.prompt(state) if attempt == 1 else self.repair_prompt(state, answer, problems)
            )
            response = await self._ask(llm, messages, metadata, records, attempt)
            if response is None:
                problems = ["the model could not be reached"]
                break
            answer = response.content
            try:
                steps = self.check(answer)
            except PlanProblems as exc:
                problems = exc.problems
                records[-1].status = "error"
                records[-1].error = "; ".join(problems)
                continue
            records[-1].output = {"steps": steps}
            result = await self.compile(steps).run(
                state, executor, tools=tools, replanner=replanner
            )
            result.path[:0] = records
            _renumber(result.path)
            return result
        return await self._invalid(state, executor, tools, replanner, records, problems)

    async def run_plan_json(
        self,
        plan: str | Mapping[str, Any],
        state: PlanState,
        executor: StepExecutor | None = None,
        *,
        tools: ToolInvoker | None = None,
        replanner: Replanner | None = None,
    ) -> PlanResult:
        """Run a plan given as JSON (replayed, or written by a human) without asking a model."""
        steps = self.check(plan)
        return await self.compile(steps).run(state, executor, tools=tools, replanner=replanner)

    async def _ask(
        self,
        llm: LLMProvider,
        messages: list[ChatMessage],
        metadata: dict[str, Any] | None,
        records: list[StepRecord],
        attempt: int,
    ) -> LLMResponse | None:
        started = time.time()
        try:
            response = await llm.chat(
                messages,
                model=self.model,
                json_schema=PLAN_SCHEMA,
                temperature=0.0,
                max_tokens=self.max_tokens,
                metadata={**(metadata or {}), "purpose": "plan"},
            )
        except LLMError as exc:
            records.append(
                StepRecord(len(records), "plan", {"llm": "plan"}, "error", started, time.time(),
                           error=str(exc), attempt=attempt)
            )  # fmt: skip
            return None
        records.append(
            StepRecord(
                len(records), "plan", {"llm": "plan" if attempt == 1 else "repair"}, "ok",
                started, time.time(), tokens=response.usage.total_tokens,
                cost_usd=response.cost_usd, attempt=attempt,
            )
        )  # fmt: skip
        return response

    async def _invalid(
        self,
        state: PlanState,
        executor: StepExecutor | None,
        tools: ToolInvoker | None,
        replanner: Replanner | None,
        records: list[StepRecord],
        problems: list[str],
    ) -> PlanResult:
        reason = "invalid plan: " + "; ".join(problems)
        if self.on_invalid == "fallback" and self.fallback is not None:
            result: PlanResult = await self.fallback.run(
                state, executor, tools=tools, replanner=replanner
            )
            result.path[:0] = records
            _renumber(result.path)
            if records:
                records[-1].transition = "fallback"
                records[-1].via = "on_invalid"
            return result
        snapshot = Snapshot(
            "llm", "plan", state.to_dict(), uuid.uuid4().hex, digest(self.describe()), 0
        )
        return PlanResult("paused", "plan", records, state, snapshot, reason)

    def describe(self) -> dict[str, Any]:
        return {"actions": self.actions, "max_steps": self.max_steps, "goal": self.goal}


def _renumber(path: list[StepRecord]) -> None:
    for index, record in enumerate(path):
        record.index = index


def _prune_unused(definition: dict[str, Any]) -> dict[str, Any]:
    """Drop the escalation state when no step escalates (validation refuses unreachable)."""
    states = definition["states"]
    used = any(s.get("on_error") == "escalated" for s in states.values())
    if not used:
        del states["escalated"]
        definition["final_states"] = ["done"]
    return definition


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def check_plan_json(
    answer: str | Mapping[str, Any], actions: Mapping[str, str], max_steps: int
) -> list[dict[str, Any]]:
    """Validate a plan against `PLAN_SCHEMA`, the allowed actions and the step limit."""
    data: Any = answer
    if isinstance(answer, str):
        fenced = _FENCE.match(answer)
        try:
            data = json.loads(fenced.group(1) if fenced else answer)
        except json.JSONDecodeError as exc:
            raise PlanProblems([f"not JSON ({exc.msg} at line {exc.lineno})"]) from None
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise PlanProblems(["the plan must be a JSON object with `steps`"])
    extra = set(data) - {"steps", "reason"}
    if extra:
        problems.append(f"unknown keys {sorted(extra)}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise PlanProblems([*problems, "`steps` must be a non-empty list"])
    if len(steps) > max_steps:
        problems.append(f"{len(steps)} steps, at most {max_steps} allowed")
    checked: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        where = f"step {index + 1}"
        if not isinstance(step, Mapping):
            problems.append(f"{where} must be an object")
            continue
        unknown = set(step) - {"action", "arguments", "on_failure"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        action = step.get("action")
        if not isinstance(action, str) or action not in actions:
            problems.append(
                f"{where}: action `{action}` is not allowed (allowed: {', '.join(sorted(actions))})"
            )
        arguments = step.get("arguments", {})
        if not isinstance(arguments, Mapping):
            problems.append(f"{where}: `arguments` must be an object")
        elif arguments and isinstance(action, str) and actions.get(action) != "tool":
            problems.append(f"{where}: only tool actions take arguments")
        policy = step.get("on_failure", "stop")
        if policy not in ON_FAILURE:
            problems.append(f"{where}: on_failure `{policy}` is not one of {', '.join(ON_FAILURE)}")
        checked.append({"action": action, "arguments": dict(arguments or {}), "on_failure": policy})
    if problems:
        raise PlanProblems(problems)
    return checked


def build_llm_planner(
    spec: Any, *, known: Known | None, load_fallback: Callable[..., Any]
) -> LLMPlanner:
    """An `LLMPlanner` from its config mapping; every error at once, with positions.

    ``load_fallback`` loads the fallback plan (any planner type): it is
    `validation.load_plan`, passed in because validation dispatches to this module.
    Callers use `agentflow.kernel.planning.load_llm_planner`.
    """
    known = known or Known()
    errors = Errors()
    spec_pos = getattr(spec, "pos", Pos())
    if not isinstance(spec, Mapping):
        raise PlanValidationError([PlanError("the llm planner config must be a mapping")])
    for key in sorted(set(spec) - _KEYS):
        errors.add(f"llm planner: unknown key `{key}`", pos_of(spec, key), key)
    actions: dict[str, str] = {}
    raw_actions = spec.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        errors.add("llm planner: `actions` must list the allowed actions", pos_of(spec, "actions"))
        raw_actions = []
    for index, item in enumerate(raw_actions):
        item_pos = pos_of(raw_actions, index)
        if isinstance(item, str):
            kind, name = "step", item
        elif isinstance(item, Mapping) and len(item) == 1 and next(iter(item)) in (
            "step", "tool", "agent",
        ):  # fmt: skip
            kind, name = next(iter(item.items()))
        else:
            errors.add(
                "llm planner: an action is a step name, {tool: id} or {agent: name}", item_pos
            )
            continue
        allowed = {"step": known.steps, "tool": known.tools, "agent": known.agents}[kind]
        if allowed is not None and name not in allowed:
            errors.add(f"llm planner: unknown {kind} `{name}`", item_pos)
        actions[str(name)] = kind
    max_steps = spec.get("max_steps", 10)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or not 1 <= max_steps <= 50:
        errors.add(
            "llm planner: `max_steps` must be an integer from 1 to 50", pos_of(spec, "max_steps")
        )
        max_steps = 10
    on_invalid = spec.get("on_invalid", "fallback" if "fallback" in spec else "human")
    if on_invalid not in ("fallback", "human"):
        errors.add("llm planner: `on_invalid` is fallback or human", pos_of(spec, "on_invalid"))
    fallback = None
    if "fallback" in spec:
        try:
            fallback = load_fallback(spec["fallback"], known=known)
        except PlanValidationError as exc:
            errors.items.extend(exc.errors)
    elif on_invalid == "fallback":
        errors.add("llm planner: `on_invalid: fallback` needs a `fallback` plan", spec_pos)
    template = spec.get("template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or not template.strip():
        errors.add("llm planner: `template` must be text", pos_of(spec, "template"))
        template = DEFAULT_TEMPLATE
    if errors:
        raise PlanValidationError(errors.items)
    return LLMPlanner(
        actions=actions,
        max_steps=max_steps,
        model=spec.get("model"),
        goal=str(spec.get("goal") or "answer the user's message"),
        template=template,
        on_invalid=str(on_invalid),
        fallback=fallback,
        max_tokens=int(spec.get("max_tokens") or 400),
        known=known,
    )
