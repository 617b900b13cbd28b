"""The FSM planner: the seed examples run, transitions are recorded, pauses resume once."""

from __future__ import annotations

import asyncio

import pytest

from agentflow.kernel.planning.fsm import load_fsm
from agentflow.kernel.planning.model import PlanState, StepOutcome
from agentflow.kernel.planning.runtime import AlreadyResumed, InMemoryResumeLedger, ResumeError
from agentflow.kernel.planning.source import parse_source
from agentflow.kernel.planning.validation import load_document, load_plan
from tests.kernel.planning_helpers import FIXTURES, ScriptedExecutor, ScriptedTools, ToolResult


def support_plan():  # type: ignore[no-untyped-def]
    return load_plan((FIXTURES / "support.yaml").read_text())


def found(confidence: float, sources: list[str]):  # type: ignore[no-untyped-def]
    def step(state: PlanState) -> StepOutcome:
        state.response.update(confidence=confidence, data_sources=sources)
        return StepOutcome.ok()

    return step


async def test_support_fsm_delivers_a_confident_answer() -> None:
    executor = ScriptedExecutor({"knowledge_search": found(0.9, ["kb-1"])})
    result = await support_plan().run(PlanState(message="reset my password"), executor)
    assert result.status == "completed"
    assert result.nodes == ["classify", "knowledge_search", "generate_response", "send_response"]
    assert executor.calls == result.nodes
    search = result.path[1]
    assert (search.transition, search.via, search.condition) == (
        "generate_response",
        "on_success",
        None,
    )
    assert search.finished_at >= search.started_at


async def test_support_fsm_conditional_transitions_in_order() -> None:
    low = await support_plan().run(
        PlanState(), ScriptedExecutor({"knowledge_search": found(0.5, [])})
    )
    assert low.nodes[-1] == "human_review"
    assert low.path[1].via == "conditional_transitions[0]"
    assert low.path[1].condition == "response.confidence < 0.7"
    empty = await support_plan().run(
        PlanState(), ScriptedExecutor({"knowledge_search": found(0.9, [])})
    )
    assert empty.nodes[-1] == "escalate"
    assert empty.path[1].condition == "size(response.data_sources) == 0"


async def test_errors_follow_on_error_and_unhandled_errors_fail_the_run() -> None:
    executor = ScriptedExecutor({"classify": StepOutcome.failed("classifier down")})
    result = await support_plan().run(PlanState(), executor)
    assert result.nodes == ["classify", "escalate"]
    assert result.path[0].status == "error"
    assert result.path[0].via == "on_error"
    fraud = load_document((FIXTURES / "fraud_detection.yaml").read_text())[0].plan
    failing = ScriptedExecutor(
        {"score_transaction": {"risk_score": 0.9}, "additional_checks": StepOutcome.failed("db")}
    )
    failed = await fraud.run(PlanState(), failing)
    assert failed.status == "failed"
    assert failed.node == "additional_checks"
    assert "db" in (failed.error or "")


@pytest.mark.parametrize(
    ("script", "path"),
    [
        (
            {"score_transaction": {"risk_score": 0.2}},
            ["score_transaction", "check_velocity", "approve_transaction"],
        ),
        (
            {"score_transaction": {"risk_score": 0.9},
             "additional_checks": {"combined_score": 0.5}},
            ["score_transaction", "check_velocity", "additional_checks", "final_decision",
             "approve_transaction"],
        ),
        (
            {"score_transaction": {"risk_score": 0.9},
             "additional_checks": {"combined_score": 0.95}},
            ["score_transaction", "check_velocity", "additional_checks", "final_decision",
             "flag_for_manual_review"],
        ),
        (
            {"score_transaction": StepOutcome.failed("model down")},
            ["score_transaction", "flag_for_manual_review"],
        ),
    ],
)  # fmt: skip
async def test_fraud_detection_seed_example(script: dict, path: list[str]) -> None:  # type: ignore[type-arg]
    fraud = load_document((FIXTURES / "fraud_detection.yaml").read_text())[0].plan
    result = await fraud.run(PlanState(), ScriptedExecutor(script))
    assert result.status == "completed"
    assert result.nodes == path
    for record in result.path:
        if record.node == "check_velocity":
            assert record.condition == "state.risk_score < 0.7"
            assert record.via in ("on_true", "on_false")


async def test_content_moderation_decision_fsm() -> None:
    plans = load_document((FIXTURES / "content_moderation.yaml").read_text())
    decision = next(p.plan for p in plans if p.label == "agents.decision_maker.planner")
    banned = await decision.run(
        PlanState(),
        ScriptedExecutor(
            {"collect_results": {"all_checks_passed": False, "violation_severity": 0.9}}
        ),
    )
    assert banned.nodes == ["collect_results", "make_decision", "determine_action", "ban_content"]
    approved = await decision.run(
        PlanState(), ScriptedExecutor({"collect_results": {"all_checks_passed": True}})
    )
    assert approved.nodes[-1] == "approve_content"


TOOL_PLAN = """
states:
  lookup:
    action: {tool: order_lookup, arguments: {order_id: "state.order_id", verbose: true}}
    on_success: answer
    on_error: apologise
    conditional_transitions:
      - {condition: "tool.order_lookup.status == 'lost'", target: refund}
  refund:
    action: {tool: issue_refund, arguments: {order_id: "state.order_id"}}
    on_success: answer
    on_error: apologise
initial_state: lookup
final_states: [answer, apologise]
"""


async def test_tool_actions_evaluate_arguments_and_store_outputs() -> None:
    plan = load_fsm(parse_source(TOOL_PLAN))
    tools = ScriptedTools({"order_lookup": ToolResult("ok", {"status": "shipped"})})
    result = await plan.run(PlanState(state={"order_id": "A-1"}), ScriptedExecutor(), tools=tools)
    assert tools.calls == [("order_lookup", {"order_id": "A-1", "verbose": True})]
    assert result.state.tool["order_lookup"] == {"status": "shipped"}
    assert result.nodes == ["lookup", "answer"]
    assert result.path[0].action == {
        "tool": "order_lookup",
        "arguments": {"order_id": "state.order_id", "verbose": "true"},
    }


@pytest.mark.parametrize(
    "status", ["error", "timeout", "denied", "invalid_arguments", "invalid_output"]
)
async def test_tool_failures_follow_on_error(status: str) -> None:
    plan = load_fsm(parse_source(TOOL_PLAN))
    tools = ScriptedTools({"order_lookup": ToolResult(status, error="nope")})
    result = await plan.run(PlanState(state={"order_id": "A-1"}), ScriptedExecutor(), tools=tools)
    assert result.nodes == ["lookup", "apologise"]
    assert status in (result.path[0].error or "")


async def test_a_tool_needing_approval_pauses_and_resumes_exactly_once() -> None:
    plan = load_fsm(parse_source(TOOL_PLAN))
    tools = ScriptedTools(
        {
            "order_lookup": ToolResult("ok", {"status": "lost"}),
            "issue_refund": ToolResult("needs_approval", error="refunds need a human"),
        }
    )
    paused = await plan.run(PlanState(state={"order_id": "A-9"}), ScriptedExecutor(), tools=tools)
    assert paused.status == "paused"
    assert paused.snapshot is not None
    assert paused.snapshot.node == "refund"
    assert paused.snapshot.data["tool"]["order_lookup"] == {"status": "lost"}
    ledger = InMemoryResumeLedger()
    executor = ScriptedExecutor()
    decision = StepOutcome.ok({"approved_by": "r1"})
    results = await asyncio.gather(
        plan.resume(paused.snapshot, decision, executor, ledger=ledger),
        plan.resume(paused.snapshot, decision, executor, ledger=ledger),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AlreadyResumed)]
    assert len(done) == 1
    assert len(refused) == 1
    assert done[0].status == "completed"
    assert done[0].nodes == ["refund", "answer"]
    assert done[0].path[0].action["resumed"] is True
    assert executor.calls == ["answer"]  # the approved step is not run again


async def test_resume_refuses_a_snapshot_of_another_plan() -> None:
    plan = load_fsm(parse_source(TOOL_PLAN))
    tools = ScriptedTools(
        {
            "order_lookup": ToolResult("ok", {"status": "lost"}),
            "issue_refund": ToolResult("needs_approval"),
        }
    )
    paused = await plan.run(PlanState(state={"order_id": "A"}), ScriptedExecutor(), tools=tools)
    assert paused.snapshot is not None
    other = support_plan()
    with pytest.raises(ResumeError):
        await other.resume(paused.snapshot, StepOutcome.ok(), ScriptedExecutor())


async def test_per_state_timeout_becomes_a_timeout_outcome() -> None:
    text = """
states:
  slow: {timeout: 20ms, on_success: done, on_error: gave_up}
initial_state: slow
final_states: [done, gave_up]
"""
    plan = load_fsm(parse_source(text))
    result = await plan.run(PlanState(), ScriptedExecutor(delay=0.5))
    assert [r.status for r in result.path] == ["timeout", "ok"]
    assert result.nodes == ["slow", "gave_up"]


async def test_a_loop_stops_at_max_steps() -> None:
    text = """
states:
  poll:
    on_success: poll
    conditional_transitions: [{condition: "state.ready == true", target: done}]
initial_state: poll
final_states: [done]
max_steps: 5
"""
    result = await load_fsm(parse_source(text)).run(
        PlanState(state={"ready": False}), ScriptedExecutor()
    )
    assert result.status == "failed"
    assert "step limit 5" in (result.error or "")
    assert len(result.path) == 5


async def test_an_executor_exception_is_a_failed_step_not_a_crash() -> None:
    def boom(state: PlanState) -> StepOutcome:
        raise RuntimeError("kaput")

    result = await support_plan().run(PlanState(), ScriptedExecutor({"classify": boom}))
    assert result.path[0].status == "error"
    assert "kaput" in (result.path[0].error or "")
    assert result.nodes[-1] == "escalate"


@pytest.mark.parametrize(
    ("confidence", "escalate", "last"),
    [(0.9, False, "deliver"), (0.4, False, "human_review"), (0.9, True, "human_review")],
)
async def test_the_support_pipeline_shape(confidence: float, escalate: bool, last: str) -> None:
    from agentflow.kernel.planning.parsing import Known
    from agentflow.kernel.planning.support import SUPPORT_PLANNER, SUPPORT_STEPS

    plan = load_plan(SUPPORT_PLANNER, known=Known(steps=SUPPORT_STEPS))

    def evaluate(state: PlanState) -> StepOutcome:
        state.response["confidence"] = confidence
        if escalate:
            state.state["escalate"] = True
        return StepOutcome.ok()

    result = await plan.run(PlanState(), ScriptedExecutor({"evaluate": evaluate}))
    assert result.nodes == ["classify", "context", "generate_response", "evaluate", last]


def test_tool_arguments_must_be_expressions_or_literals() -> None:
    from agentflow.kernel.planning.source import PlanValidationError

    text = """\
states:
  lookup:
    action: {tool: order_lookup, arguments: {order_id: {nested: 1}, limit: 5, q: "state.q +"}}
    on_success: done
initial_state: lookup
final_states: [done]
"""
    with pytest.raises(PlanValidationError) as info:
        load_fsm(parse_source(text))
    reasons = [e.reason for e in info.value.errors]
    assert reasons[0] == (
        "state `lookup`: argument `order_id` must be a CEL expression (a string) or a literal"
    )
    assert "argument `q`" in reasons[1]
    assert "syntax error" in reasons[1]
    assert len(reasons) == 2
