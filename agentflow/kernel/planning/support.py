"""The support pipeline's shape as an FSM (SPEC 4.1): classify → context → generate →
evaluate → deliver, or human review.

The steps are the kernel's built-in stages (`AgentPipeline` runs them as the planner's step
executor). ``evaluate`` writes the answer's combined confidence to ``response.confidence``,
the confidence the intent needs to ``state.threshold`` (0 when the handler skips the check)
and ``state.escalate`` (true when the answer goes to a human whatever its confidence: the
intent always escalates or is out of scope, the provider or the budget refused, the handler
asked). A failing ``classify`` or ``generate_response`` goes to a human, a failing
``context`` still answers (the pipeline degrades the same way).

`SUPPORT_NATIVE_CONDITIONS` gives the compiled walk the two conditions of ``evaluate`` as
plain Python: they run for every message, and their CEL evaluation cost more than the rest
of the walk. Each returns None whenever CEL's answer could differ (a missing or non-float
confidence, a non-boolean ``state.escalate``...), and CEL decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentflow.kernel.planning.behavior_tree import BehaviorTreePlan
from agentflow.kernel.planning.compiled import NativeCondition
from agentflow.kernel.planning.fsm import FSMPlan
from agentflow.kernel.planning.llm_planner import LLMPlanner
from agentflow.kernel.planning.model import PlanState
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.source import parse_source
from agentflow.kernel.planning.validation import load_plan

__all__ = [
    "SUPPORT_FSM",
    "SUPPORT_NATIVE_CONDITIONS",
    "SUPPORT_PLANNER",
    "SUPPORT_STEPS",
    "goes_on_without_the_turn",
    "load_pipeline_plan",
    "pauses_for_review",
]

SUPPORT_STEPS = frozenset(
    {"classify", "context", "generate_response", "evaluate", "deliver", "human_review"}
)

ESCALATE_CONDITION = "has(state.escalate) && state.escalate == true"
# The agent's threshold for the intent when the step wrote it (the pipeline does); 0.6, the
# default threshold, for executors that do not.
CONFIDENT_CONDITION = "response.confidence >= (has(state.threshold) ? state.threshold : 0.6)"
_DEFAULT_THRESHOLD = 0.6


def _escalate(plan_state: PlanState) -> bool | None:
    """`ESCALATE_CONDITION`: false without the key, the value when it is a boolean."""
    section = plan_state.state
    if type(section) is not dict:
        return None
    escalate = section.get("escalate", False)
    return escalate if type(escalate) is bool else None


def _confident(plan_state: PlanState) -> bool | None:
    """`CONFIDENT_CONDITION` when both sides are floats (CEL compares no other pair alike)."""
    response, section = plan_state.response, plan_state.state
    if type(response) is not dict or type(section) is not dict:
        return None
    confidence = response.get("confidence")
    threshold = section.get("threshold", _DEFAULT_THRESHOLD)
    if type(confidence) is float and type(threshold) is float:
        return confidence >= threshold
    return None


SUPPORT_NATIVE_CONDITIONS: dict[str, NativeCondition] = {
    ESCALATE_CONDITION: _escalate,
    CONFIDENT_CONDITION: _confident,
}

SUPPORT_FSM: dict[str, Any] = {
    "states": {
        "classify": {"on_success": "context", "on_error": "human_review"},
        "context": {"on_success": "generate_response", "on_error": "generate_response"},
        "generate_response": {"on_success": "evaluate", "on_error": "human_review"},
        "evaluate": {
            "conditional_transitions": [
                {"condition": ESCALATE_CONDITION, "target": "human_review"}
            ],
            "condition": CONFIDENT_CONDITION,
            "on_true": "deliver",
            "on_false": "human_review",
        },
    },
    "initial_state": "classify",
    "final_states": ["deliver", "human_review"],
}

SUPPORT_PLANNER: dict[str, Any] = {"type": "fsm", "definition": SUPPORT_FSM}


# What a pipeline may follow: a declarative plan, or a model's plan inside fixed limits.
PipelinePlan = FSMPlan | BehaviorTreePlan | LLMPlanner


def load_pipeline_plan(spec: Mapping[str, Any] | None) -> PipelinePlan:
    """The pipeline's plan from ``{type, definition}`` (None: the support FSM), its actions
    checked against the built-in steps; raises `PlanValidationError` with every error.

    An ``llm`` planner's settings sit next to its type in the kernel's own format: its
    ``definition`` (a mapping or YAML/JSON text) is read and laid out so.
    """
    given: Mapping[str, Any] = dict(spec) if spec is not None else SUPPORT_PLANNER
    if given.get("type") == "llm":
        definition = given.get("definition")
        if isinstance(definition, str):
            definition = parse_source(definition)
        given = {**(definition or {}), "type": "llm"}
    plan: PipelinePlan = load_plan(given, known=Known(steps=SUPPORT_STEPS))
    return plan


REVIEW_STEP = "human_review"


def pauses_for_review(plan: object) -> bool:
    """Whether ``plan`` waits at ``human_review`` for the decision and continues after it
    (`agentflow.kernel.continuation`): an FSM with a ``human_review`` state that is not
    final. A plan whose reviews end it (the support FSM) hands the run to a person without
    a snapshot."""
    if not isinstance(plan, FSMPlan):
        return False
    finals = set(plan.final_states)
    return any(
        state.action.kind == "step" and state.action.name == REVIEW_STEP and name not in finals
        for name, state in plan.states.items()
    )


# What a plan can still do once its message's turn has ended (`kernel.continuation`).
AFTER_THE_TURN_STEPS = frozenset({"deliver", REVIEW_STEP})


def goes_on_without_the_turn(plan: object, node: str) -> bool:
    """Whether every state ``plan`` can reach from ``node`` runs without the message's turn
    (tool calls, pauses, ``deliver``, ``human_review``): only then does a pause there keep a
    snapshot to go on from. A plan that would generate or classify again after the pause
    ends with the decision, as a plan without pauses does."""
    if not isinstance(plan, FSMPlan) or node not in plan.states:
        return False
    seen, todo = set(), [node]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        action = plan.states[name].action
        if action.kind == "step" and action.name not in AFTER_THE_TURN_STEPS:
            return False
        if action.kind == "agent":
            return False
        todo.extend(t.target for t in plan.states[name].transitions())
    return True
