"""Load-time validation: every error kind, with its line and column, all at once."""

from __future__ import annotations

import json

import pytest

from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.source import PlanError, PlanValidationError
from agentflow.kernel.planning.validation import load_document, load_plan

STEPS = Known(steps={"classify", "generate", "send", "escalate", "review", "a", "b", "done"})


def errors_of(text: str, known: Known = STEPS) -> list[PlanError]:
    with pytest.raises(PlanValidationError) as info:
        load_document(text, known=known)
    return info.value.errors


def only(text: str, known: Known = STEPS) -> str:
    found = errors_of(text, known)
    assert len(found) == 1, [str(e) for e in found]
    return str(found[0])


def test_transition_to_a_missing_state_names_line_and_column() -> None:
    text = """\
states:
  classify:
    on_success: nowhere
initial_state: classify
final_states: [send]
"""
    assert only(text) == (
        "line 3, column 17: transition `on_success: nowhere`: no state named `nowhere`"
    )


def test_unreachable_state() -> None:
    text = """\
states:
  classify: {on_success: send}
  review: {on_success: send}
initial_state: classify
final_states: [send]
"""
    assert only(text) == "line 3, column 3: state `review` is unreachable from `classify`"


def test_no_final_state() -> None:
    text = """\
states:
  classify: {on_success: classify}
initial_state: classify
"""
    found = [str(e) for e in errors_of(text)]
    assert found[0].startswith("line 1, column 1: no final state")
    assert "cycle without exit" in found[1]


def test_final_state_with_outgoing_transitions() -> None:
    text = """\
states:
  classify: {on_success: send}
  send:
    on_success: classify
initial_state: classify
final_states: [send]
"""
    assert only(text) == "line 4, column 17: final state `send` has outgoing transitions"


def test_unknown_step_tool_and_agent() -> None:
    text = """\
states:
  classify:
    on_success: lookup
  lookup:
    action: {tool: crm_lookup}
    on_success: helper
  helper:
    action: {agent: ghost}
    on_success: send
  send: {action: teleport}
initial_state: classify
final_states: [send]
"""
    known = Known(steps=STEPS.steps, tools={"order_lookup"}, agents={"triage_agent"})
    found = [str(e) for e in errors_of(text, known)]
    assert found == [
        "line 5, column 20: state `lookup`: unknown tool `crm_lookup` (known: order_lookup)",
        "line 8, column 21: state `helper`: unknown agent `ghost` (known: triage_agent)",
        "line 10, column 18: state `send`: unknown step `teleport` (known: a, b, classify, done,"
        " escalate, generate, review, send)",
    ]


def test_bad_expressions_name_their_line() -> None:
    text = """\
states:
  classify:
    on_success: send
    conditional_transitions:
      - condition: "__import__('os')"
        target: escalate
      - condition: "message.__class__ == 1"
        target: escalate
      - condition: "response.confidence < 'high'"
        target: escalate
initial_state: classify
final_states: [send, escalate]
"""
    found = [str(e) for e in errors_of(text)]
    assert [e.split(":")[0] for e in found] == [
        "line 5, column 20",
        "line 7, column 20",
        "line 9, column 20",
    ]
    assert "unknown function `__import__()`" in found[0]
    assert "names starting with `_` are not accessible" in found[1]
    assert "cannot compare a number with a string" in found[2]


def test_cycle_without_exit() -> None:
    text = """\
states:
  classify: {on_success: generate}
  generate: {on_success: review, on_error: send}
  review: {on_success: a}
  a: {on_success: review}
initial_state: classify
final_states: [send]
"""
    assert only(text) == (
        "line 4, column 3: cycle without exit: review → a → review never reaches a final state"
    )


def test_dead_end_state() -> None:
    text = """\
states:
  classify: {on_success: generate}
  generate: {}
initial_state: classify
final_states: [send]
"""
    assert only(text) == (
        "line 3, column 3: state `generate` is not final and has no transition (dead end)"
    )


def test_condition_needs_both_branches_and_timeouts_are_durations() -> None:
    text = """\
states:
  classify:
    condition: "intent.confidence > 0.5"
    on_true: send
    timeout: soon
initial_state: classify
final_states: [send]
"""
    found = [str(e) for e in errors_of(text)]
    assert found == [
        "line 3, column 5: state `classify`: a `condition` needs both `on_true` and `on_false`",
        "line 5, column 14: timeout `soon` is not a duration like 500ms, 2s or 10m",
    ]


def test_parallel_without_children_and_other_tree_errors() -> None:
    text = """\
root:
  type: sequence
  children:
    - type: parallel
      children: []
    - type: parallel
      success_policy: 5
      children:
        - {type: action, step: a}
    - type: condition
      check: "state.x >"
    - type: teleport
    - type: action
      tool: missing_tool
    - type: conditional_selector
      conditions:
        - default: true
          child: {type: action, step: a}
        - expression: "true"
          child: {type: action, step: b}
"""
    found = [str(e) for e in errors_of(text, Known(steps=STEPS.steps, tools=set()))]
    assert found[0] == "line 5, column 7: parallel `root.children[0]` has no children"
    assert found[1].startswith(
        "line 7, column 7: parallel `root.children[1]`: success_policy `5` must be all, any"
    )
    assert found[2].startswith("line 11, column 14: condition `root.children[2]`: condition")
    assert "syntax error" in found[2]
    assert found[3].startswith("line 12, column 7: node `root.children[3]`: unknown type")
    assert found[4] == (
        "line 14, column 13: action `root.children[4]`: unknown tool `missing_tool` (known: none)"
    )
    assert found[5] == (
        "line 17, column 11: conditional_selector `root.children[5]`: "
        "the `default` branch must come last"
    )
    assert len(found) == 6


def test_all_errors_at_once_across_planners_with_outer_file_lines() -> None:
    text = """\
name: two-agents
agents:
  first:
    planner:
      type: fsm
      definition: |
        states:
          classify:
            on_success: nowhere
        initial_state: classify
        final_states: [send]
  second:
    planner:
      type: behavior_tree
      definition: |
        root:
          type: parallel
          children: []
"""
    found = [str(e) for e in errors_of(text)]
    assert found == [
        "line 9, column 25: transition `on_success: nowhere`: no state named `nowhere`",
        "line 18, column 11: parallel `root` has no children",
    ]


def test_yaml_syntax_errors_and_duplicate_keys_have_lines() -> None:
    broken = "states:\n  classify: {on_success: send\ninitial_state: classify\n"
    assert errors_of(broken)[0].pos.line == 3
    duplicate = """\
states:
  classify: {on_success: send}
  classify: {on_success: send}
initial_state: classify
final_states: [send]
"""
    assert only(duplicate) == "line 3, column 3: duplicate key `classify` (the later one would win)"


def test_json_text_has_lines_and_dicts_have_paths() -> None:
    definition = {
        "states": {"classify": {"on_success": "nowhere"}},
        "initial_state": "classify",
        "final_states": ["send"],
    }
    as_json = json.dumps(definition, indent=2)
    assert only(as_json).startswith("line 4, column 21: transition `on_success: nowhere`")
    with pytest.raises(PlanValidationError) as info:
        load_plan(definition, known=STEPS)
    assert str(info.value.errors[0]) == (
        "states.classify.on_success: transition `on_success: nowhere`: no state named `nowhere`"
    )
    typed = {"type": "fsm", "definition": definition}
    with pytest.raises(PlanValidationError):
        load_plan(typed)


def test_unknown_planner_type() -> None:
    assert only("planner:\n  type: magic\n  definition: {}\n") == (
        "line 2, column 3: planner type `magic` is not one of fsm, behavior_tree, llm"
    )


def test_error_dicts_for_the_api() -> None:
    error = errors_of("states:\n  a: {on_success: b}\ninitial_state: a\nfinal_states: [c]\n")[0]
    assert error.to_dict() == {
        "line": 2,
        "column": 19,
        "path": "states.a.on_success",
        "reason": "transition `on_success: b`: no state named `b`",
        "message": "line 2, column 19: transition `on_success: b`: no state named `b`",
    }
