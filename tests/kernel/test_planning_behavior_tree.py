"""The behavior-tree planner: node semantics, the seed examples, pause and resume."""

from __future__ import annotations

import pytest

from agentflow.kernel.planning.behavior_tree import load_behavior_tree
from agentflow.kernel.planning.model import PlanState, StepOutcome
from agentflow.kernel.planning.runtime import AlreadyResumed, InMemoryResumeLedger
from agentflow.kernel.planning.source import parse_source
from agentflow.kernel.planning.validation import load_document, load_plan
from tests.kernel.planning_helpers import FIXTURES, ScriptedExecutor


def moderation():  # type: ignore[no-untyped-def]
    plans = load_document((FIXTURES / "content_moderation.yaml").read_text())
    return next(p.plan for p in plans if p.kind == "behavior_tree")


CLEAN = {
    "toxicity_detector": lambda s: s.state.update(toxicity_score=0.1),
    "spam_detector": lambda s: s.state.update(spam_confidence=0.2),
    "pii_detector": lambda s: s.state.update(pii_found=False),
}


async def test_content_moderation_passes_clean_content() -> None:
    executor = ScriptedExecutor(CLEAN)  # type: ignore[arg-type]
    result = await moderation().run(PlanState(message="nice post"), executor)
    assert result.status == "completed"
    assert sorted(executor.calls) == ["pii_detector", "spam_detector", "toxicity_detector"]
    # Parallel children are recorded in child order, whatever finished first.
    assert [r.node for r in result.path] == [
        "root.children[0].children[0]",
        "root.children[0].children[1]",
        "root.children[1].children[0]",
        "root.children[1].children[1]",
        "root.children[2].children[0]",
        "root.children[2].children[1]",
    ]
    assert result.path[1].condition == "state.toxicity_score < 0.3"
    assert result.path[1].transition == "success"


async def test_content_moderation_fails_when_one_check_fails() -> None:
    script = {**CLEAN, "spam_detector": lambda s: s.state.update(spam_confidence=0.9)}
    result = await moderation().run(PlanState(), ScriptedExecutor(script))  # type: ignore[arg-type]
    assert result.status == "failed"
    failed = [r for r in result.path if r.transition == "failure"]
    assert [r.condition for r in failed] == ["state.spam_confidence < 0.5"]


def triage():  # type: ignore[no-untyped-def]
    return load_plan((FIXTURES / "urgent_triage.yaml").read_text())


@pytest.mark.parametrize(
    ("classifier", "checker", "chosen", "via"),
    [
        ({"confidence": 0.95}, {"escalate": True}, "responder", "conditions[0]"),
        ({"confidence": 0.5}, {"escalate": True}, "human_task_agent", "conditions[1]"),
        ({"confidence": 0.5}, {"escalate": False}, "fallback_handler", "default"),
    ],
)
async def test_seed_behavior_tree_conditional_selector(
    classifier: dict,
    checker: dict,
    chosen: str,
    via: str,  # type: ignore[type-arg]
) -> None:
    executor = ScriptedExecutor({"classifier": classifier, "escalation_checker": checker})
    result = await triage().run(PlanState(state={"urgency": "high"}), executor)
    assert result.status == "completed"
    assert executor.calls[-1] == chosen
    assert result.state.state["classifier"] == classifier  # sub-agent output under its name
    select = next(r for r in result.path if "select" in r.action)
    assert select.via == via


async def test_seed_behavior_tree_condition_gate() -> None:
    executor = ScriptedExecutor()
    result = await triage().run(PlanState(state={"urgency": "low"}), executor)
    assert result.status == "failed"
    assert executor.calls == []


TREE = """
root:
  type: selector
  children:
    - type: parallel
      success_policy: {policy}
      children:
        - {{type: action, step: a}}
        - {{type: action, step: b}}
        - {{type: action, step: c}}
    - {{type: action, step: fallback}}
"""


@pytest.mark.parametrize(
    ("policy", "failing", "expected_fallback"),
    [
        ("all", [], False),
        ("all", ["b"], True),
        ("any", ["a", "b"], False),
        ("any", ["a", "b", "c"], True),
        ("2", ["a"], False),
        ("2", ["a", "c"], True),
    ],
)
async def test_parallel_success_policies(
    policy: str, failing: list[str], expected_fallback: bool
) -> None:
    plan = load_behavior_tree(parse_source(TREE.format(policy=policy)))
    executor = ScriptedExecutor({name: StepOutcome.failed("no") for name in failing})
    result = await plan.run(PlanState(), executor)
    assert ("fallback" in executor.calls) is expected_fallback
    assert result.status == "completed"


async def test_a_paused_action_resumes_once_without_rerunning_finished_actions() -> None:
    text = """
root:
  type: sequence
  children:
    - {type: action, step: draft}
    - {type: action, step: human_review}
    - type: conditional_selector
      conditions:
        - expression: "state.approved == true"
          child: {type: action, step: publish}
        - default: true
          child: {type: action, step: discard}
"""
    plan = load_behavior_tree(parse_source(text))
    first = ScriptedExecutor({"human_review": StepOutcome("paused")})
    paused = await plan.run(PlanState(), first)
    assert paused.status == "paused"
    assert paused.snapshot is not None
    assert paused.snapshot.node == "root.children[1]"
    assert first.calls == ["draft", "human_review"]

    def approve(state: PlanState) -> StepOutcome:  # the reviewer's decision writes the state
        return StepOutcome.ok()

    snapshot = paused.snapshot
    snapshot.data["state"]["approved"] = True
    second = ScriptedExecutor({"human_review": approve})
    ledger = InMemoryResumeLedger()
    resumed = await plan.resume(snapshot, StepOutcome.ok(), second, ledger=ledger)
    assert resumed.status == "completed"
    assert second.calls == ["publish"]  # draft is not run again, review is the decision
    assert resumed.path[0].action["resumed"] is True
    with pytest.raises(AlreadyResumed):
        await plan.resume(snapshot, StepOutcome.ok(), second, ledger=ledger)
