"""A playbook as a planner an agent can run (issue 16, SPEC 9): an FSM over the support steps.

A playbook's steps are trace names (:func:`learning.loop.trace_steps`); each maps to the
built-in support step that produced it:

==================== ================= ================================================
trace step           FSM state         why
==================== ================= ================================================
``classify:<x>``     ``classify``      the intent step
``consult:<k>:<t>``  ``context``       retrieval of that source (all consults: one state)
``answer:<handler>`` ``generate_response`` then ``evaluate`` (the confidence gate)
``review:<d>``       ``human_review``  a person decided; the plan ends with a person
``handoff``          ``human_review``  the answer went to a person
``deliver``          ``deliver``       the answer reached the customer
``tool:<name>``, any other           guidance only: platform agents have no tool actions
==================== ================= ================================================

Each state's ``description`` lists the playbook steps it stands for; a step that is not a
built-in action is guidance in the description of the state before it. The FSM always has
the pipeline's spine, so it is valid and safe by construction: ``classify`` first,
``context`` only when the playbook consults sources, then ``generate_response`` and
``evaluate``; it ends at ``human_review`` when the playbook's runs went through a person,
else at the support FSM's gate (``deliver`` when confident, ``human_review`` otherwise).
States the playbook lacks but the pipeline needs say so in their description. The
definition is checked with the agent config's own validation (`planner_issues`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from agentflow.planners import PlannerConfig, planner_issues

__all__ = [
    "STEP_STATES",
    "planner_for",
    "planner_of",
    "planner_problems",
    "planner_yaml",
    "state_of",
]

STEP_STATES: Mapping[str, str] = {
    "classify": "classify",
    "consult": "context",
    "answer": "generate_response",
    "review": "human_review",
    "handoff": "human_review",
    "deliver": "deliver",
}
_NEEDED = "not a common step of the playbook; the support pipeline needs it"
# The support FSM's gate (agentflow.kernel.planning.support), unchanged.
_ESCALATE = "has(state.escalate) && state.escalate == true"
_CONFIDENT = "response.confidence >= (has(state.threshold) ? state.threshold : 0.6)"


def state_of(step: str) -> str | None:
    """The FSM state a trace step maps to, or None when it is guidance only."""
    return STEP_STATES.get(step.split(":", 1)[0])


def _grouped(steps: Sequence[str]) -> dict[str, list[str]]:
    """Each state's playbook steps, guidance-only steps joining the state before them."""
    groups: dict[str, list[str]] = {}
    current = "classify"
    for step in steps:
        mapped = state_of(step)
        current = mapped or current
        groups.setdefault(current, []).append(step if mapped else f"{step} (guidance)")
    return groups


def _describe(groups: Mapping[str, list[str]], state: str) -> str:
    found = groups.get(state)
    return "playbook: " + ", ".join(found) if found else _NEEDED


def planner_for(name: str, steps: Sequence[str]) -> dict[str, Any]:
    """The playbook's planner config, ``{type: fsm, definition: {...}}`` (see module doc)."""
    groups = _grouped(steps)
    after_classify = "context" if "context" in groups else "generate_response"
    states: dict[str, Any] = {
        "classify": {"on_success": after_classify, "on_error": "human_review"},
    }
    if "context" in groups:
        # As in the support FSM: a failed retrieval still answers.
        states["context"] = {"on_success": "generate_response", "on_error": "generate_response"}
    states["generate_response"] = {"on_success": "evaluate", "on_error": "human_review"}
    reviewed = "human_review" in groups
    if reviewed:
        states["evaluate"] = {"on_success": "human_review", "on_error": "human_review"}
    else:
        states["evaluate"] = {
            "conditional_transitions": [{"condition": _ESCALATE, "target": "human_review"}],
            "condition": _CONFIDENT,
            "on_true": "deliver",
            "on_false": "human_review",
        }
    states["human_review"] = {}
    if not reviewed:
        states["deliver"] = {}
    described = {
        state: {"description": _describe(groups, state), **spec} for state, spec in states.items()
    }
    described["evaluate"]["description"] = "the confidence gate after the answer"
    definition = {
        "name": name,
        "description": "Extracted playbook: " + " -> ".join(steps),
        "initial_state": "classify",
        "final_states": ["human_review"] if reviewed else ["deliver", "human_review"],
        "states": described,
    }
    return {"type": "fsm", "definition": definition}


def planner_of(playbook: Any) -> dict[str, Any]:
    """A playbook's stored planner; a row written without one (not by extraction) gets it
    built from its steps, the same way."""
    stored: dict[str, Any] = playbook.planner
    return stored or planner_for(playbook.name, playbook.steps)


def planner_yaml(planner: Mapping[str, Any]) -> str:
    """The definition as YAML text, as an agent config may hold it (errors name lines)."""
    return yaml.safe_dump(dict(planner["definition"]), sort_keys=False, allow_unicode=True)


def planner_problems(planner: Mapping[str, Any]) -> list[str]:
    """What the agent config's validation says of the planner: [] when an agent can run it."""
    config = PlannerConfig.model_validate(dict(planner))
    return [issue.describe() for issue in planner_issues(config)]
