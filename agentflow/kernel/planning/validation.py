"""Loading any planner definition from YAML text, JSON text or a dict, with all its errors.

Accepted shapes:

* a bare definition: a mapping with ``states`` (FSM) or ``root`` (behavior tree);
* ``{type: fsm | behavior_tree | llm, definition: <mapping or YAML text>}``;
* ``{planner: {type, definition}}`` (an agent config);
* a workflow file like the seed's examples: ``{agents: {<name>: {planner: ...}}}``, one plan
  per agent that has a planner.

A definition embedded as a YAML block string (``definition: |``) reports errors at the lines
of the outer file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentflow.kernel.planning.behavior_tree import BehaviorTreePlan, load_behavior_tree
from agentflow.kernel.planning.fsm import FSMPlan, load_fsm
from agentflow.kernel.planning.llm_planner import LLMPlanner, build_llm_planner
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.source import (
    PlanError,
    PlanValidationError,
    Pos,
    embedded_offsets,
    parse_source,
    pos_of,
)

__all__ = ["LoadedPlan", "Plan", "load_document", "load_plan"]

Plan = FSMPlan | BehaviorTreePlan
PLANNER_TYPES = ("fsm", "behavior_tree", "llm")


@dataclass(frozen=True, slots=True)
class LoadedPlan:
    label: str
    kind: str
    plan: Any  # FSMPlan | BehaviorTreePlan | LLMPlannerConfig

    def summary(self) -> str:
        return f"{self.label}: {self.plan.summary()}"


def load_plan(
    source: str | Mapping[str, Any],
    *,
    kind: str | None = None,
    known: Known | None = None,
) -> Any:
    """One plan from text or a dict; raise `PlanValidationError` listing every error."""
    loaded = load_document(source, kind=kind, known=known)
    if len(loaded) != 1:
        raise PlanValidationError([PlanError(f"expected one planner, found {len(loaded)}")])
    return loaded[0].plan


def load_document(
    source: str | Mapping[str, Any],
    *,
    kind: str | None = None,
    known: Known | None = None,
) -> list[LoadedPlan]:
    """Every planner in a document; all errors of all planners in one exception."""
    text = source if isinstance(source, str) else None
    data = parse_source(source) if isinstance(source, str) else source
    known = known or Known()
    errors: list[PlanError] = []
    found: list[LoadedPlan] = []
    for label, container, key, planner_kind in _planners(data, kind, errors):
        try:
            plan = _load_one(container, key, planner_kind, text, known, label)
        except PlanValidationError as exc:
            errors.extend(exc.errors)
            continue
        found.append(LoadedPlan(label, planner_kind, plan))
    if errors:
        raise PlanValidationError(errors)
    return found


def _planners(
    data: Any, kind: str | None, errors: list[PlanError]
) -> list[tuple[str, Any, str | None, str]]:
    """(label, container, key of the definition in it or None for itself, planner type)."""
    if not isinstance(data, Mapping):
        errors.append(PlanError("a plan document is a mapping", pos_of(data, 0)))
        return []
    if "agents" in data and isinstance(data["agents"], Mapping) and "states" not in data:
        found = []
        for name, agent in data["agents"].items():
            if isinstance(agent, Mapping) and "planner" in agent:
                found.extend(_planner_entry(f"agents.{name}.planner", agent, "planner", errors))
        if not found:
            errors.append(PlanError("no agent in this file has a planner", pos_of(data, "agents")))
        return found
    if "planner" in data:
        return _planner_entry("planner", data, "planner", errors)
    if "definition" in data or (data.get("type") in PLANNER_TYPES and "states" not in data):
        return _typed(data, "", errors)
    guessed = kind or ("fsm" if "states" in data else "behavior_tree" if "root" in data else None)
    if guessed is None:
        errors.append(
            PlanError(
                "not a plan: expected `states` (FSM), `root` (behavior tree), "
                "`planner` or `type` + `definition`",
                getattr(data, "pos", Pos()),
            )
        )
        return []
    return [("plan", data, None, guessed)]


def _planner_entry(
    label: str, container: Any, key: str, errors: list[PlanError]
) -> list[tuple[str, Any, str | None, str]]:
    spec = container[key]
    if not isinstance(spec, Mapping):
        errors.append(PlanError(f"`{label}` must be a mapping with type and definition"))
        return []
    return [(label, entry[1], entry[2], entry[3]) for entry in _typed(spec, label, errors)]


def _typed(
    spec: Any, label: str, errors: list[PlanError]
) -> list[tuple[str, Any, str | None, str]]:
    planner_type = spec.get("type")
    if planner_type not in PLANNER_TYPES:
        errors.append(
            PlanError(
                f"planner type `{planner_type}` is not one of {', '.join(PLANNER_TYPES)}",
                pos_of(spec, "type") if "type" in spec else getattr(spec, "pos", Pos()),
                f"{label}.type" if label else "type",
            )
        )
        return []
    if planner_type == "llm":
        return [(label or "planner", spec, None, "llm")]
    if "definition" not in spec:
        errors.append(PlanError("the planner has no `definition`", getattr(spec, "pos", Pos())))
        return []
    return [(label or "planner", spec, "definition", str(planner_type))]


def _load_one(
    container: Any, key: str | None, kind: str, text: str | None, known: Known, label: str
) -> Any:
    if kind == "llm":
        return load_llm_planner(container, known=known)
    definition = container if key is None else container[key]
    if isinstance(definition, str):
        line_offset, column_offset = embedded_offsets(text, container, key or "")
        definition = parse_source(definition, line_offset=line_offset, column_offset=column_offset)
    if kind == "fsm":
        return load_fsm(definition, known=known)
    return load_behavior_tree(definition, known=known)


def load_llm_planner(spec: Any, *, known: Known | None = None) -> LLMPlanner:
    """An `LLMPlanner` from its config mapping; its fallback loads like any plan."""
    return build_llm_planner(spec, known=known, load_fallback=load_plan)
