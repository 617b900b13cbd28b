"""A support plan that waits for a person and goes on after the decision (issue 16): the
pipeline pauses at a non-final ``human_review`` with a snapshot, and `continue_plan` resumes
at that state with the decision as its outcome, exactly once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.continuation import continue_plan, review_outcome, tool_outcome
from agentflow.kernel.planning.runtime import AlreadyResumed, InMemoryResumeLedger, ResumeError
from agentflow.kernel.planning.support import (
    goes_on_without_the_turn,
    load_pipeline_plan,
    pauses_for_review,
)
from tests.kernel.pipeline_fakes import CATEGORIES, KNOWLEDGE
from tests.kernel.planning_helpers import ScriptedTools, ToolResult

# Every answer is reviewed; approved ones are noted in the CRM, then delivered; a rejected
# one opens a ticket instead.
REVIEWED = """\
states:
  classify: {on_success: context, on_error: human_review}
  context: {on_success: generate_response, on_error: generate_response}
  generate_response: {on_success: human_review, on_error: human_review}
  human_review:
    on_success: note
    on_error: ticket
  note:
    action: {tool: crm_note, arguments: {text: "response.content", by: "state.review.decision"}}
    on_success: deliver
    on_error: escalate
  ticket:
    action: {tool: open_ticket, arguments: {why: "state.review.reason"}}
    on_success: deliver
    on_error: escalate
  escalate: {action: human_review}
initial_state: classify
final_states: [deliver, escalate]
"""


async def paused_reply(plan: str = REVIEWED) -> Any:
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .with_config({"planner": {"type": "fsm", "definition": plan}})
        .build()
    )
    return await agent.process_message("u1", "My login is broken, what can I do?")


def plan_of(text: str = REVIEWED) -> Any:
    return load_pipeline_plan({"type": "fsm", "definition": text})


async def go_on(snapshot: dict[str, Any], decision: Any, tools: Any, **kwargs: Any) -> Any:
    return await continue_plan(
        plan_of(),
        snapshot,
        decision,
        tools=tools,
        ledger=kwargs.pop("ledger", InMemoryResumeLedger()),
        origin=time.time(),
        clock=time.time,
        **kwargs,
    )


def test_only_a_review_that_is_not_final_waits() -> None:
    assert pauses_for_review(plan_of())
    assert not pauses_for_review(load_pipeline_plan(None))  # the support FSM ends there


async def test_the_pipeline_pauses_at_the_review_with_a_snapshot() -> None:
    reply = await paused_reply()

    assert reply.escalated
    assert reply.plan_path[-1].node == "human_review"
    assert reply.plan_path[-1].outcome == "paused"
    assert reply.plan_snapshot["node"] == "human_review"
    assert reply.plan_snapshot["data"]["response"]["content"] == reply.proposed_answer
    assert "plan_snapshot" not in reply.to_dict()  # the customer never sees plan state


async def test_the_support_plan_ends_at_its_review_without_a_snapshot() -> None:
    agent = await AgentFrameworkBuilder().with_intent_categories(CATEGORIES).build()
    reply = await agent.process_message("u1", "What is the meaning of life?")
    assert reply.escalated
    assert reply.plan_snapshot is None


async def test_approval_goes_on_from_the_review_state() -> None:
    reply = await paused_reply()
    tools = ScriptedTools({"crm_note": ToolResult("ok", {"id": "n-1"})})

    done = await go_on(
        reply.plan_snapshot,
        review_outcome("approve"),
        tools,
    )

    assert done.status == "deliver"
    assert tools.calls == [("crm_note", {"text": reply.proposed_answer, "by": "approve"})]
    assert [(s.node, s.outcome) for s in done.path] == [
        ("human_review", "success"),
        ("note", "success"),
        ("deliver", "success"),
    ]
    assert done.path[0].transition == "note"


async def test_rejection_takes_the_plans_error_branch_with_the_reason() -> None:
    reply = await paused_reply()
    tools = ScriptedTools({"open_ticket": ToolResult("ok", {"id": 7})})

    done = await go_on(
        reply.plan_snapshot,
        review_outcome("reject", "wrong product"),
        tools,
    )

    assert done.status == "deliver"
    assert tools.calls == [("open_ticket", {"why": "wrong product"})]
    first = done.path[0]
    assert (first.outcome, first.via, first.error) == (
        "error",
        "on_error",
        "rejected: wrong product",
    )


async def test_a_failing_tool_after_the_review_asks_a_person_again() -> None:
    reply = await paused_reply()
    tools = ScriptedTools({"crm_note": ToolResult("error", error="CRM down")})

    done = await go_on(reply.plan_snapshot, review_outcome("approve"), tools)

    # The plan waits at its final review too: that person's decision ends it.
    assert (done.status, done.node) == ("paused", "escalate")
    assert [s.node for s in done.path] == ["human_review", "note", "escalate"]
    assert done.path[1].error == "error: CRM down"
    assert done.snapshot is not None
    ended = await go_on(done.snapshot, review_outcome("approve"), tools)
    assert (ended.status, [s.node for s in ended.path]) == ("deliver", ["escalate"])


async def test_a_failed_plan_asks_a_person_again() -> None:
    plan = REVIEWED.replace("    on_error: escalate\n", "", 1)  # note has no error branch
    reply = await paused_reply(plan)
    tools = ScriptedTools({"crm_note": ToolResult("error", error="CRM down")})

    done = await continue_plan(
        plan_of(plan),
        reply.plan_snapshot,
        review_outcome("approve"),
        tools=tools,
        ledger=InMemoryResumeLedger(),
        origin=0.0,
        clock=time.time,
    )

    assert done.status == "review"
    assert done.error == "note: error: CRM down"


async def test_a_plan_that_needs_the_turn_after_the_pause_keeps_no_snapshot() -> None:
    # After the review it would evaluate again: the turn is gone by then, so the decision
    # ends the run (as with a plan that never pauses) rather than fail half way.
    plan = REVIEWED.replace(
        '{tool: crm_note, arguments: {text: "response.content", by: "state.review.decision"}}',
        "evaluate",
    )
    reply = await paused_reply(plan)

    assert reply.escalated
    assert reply.plan_path[-1].outcome == "paused"
    assert reply.plan_snapshot is None
    assert goes_on_without_the_turn(plan_of(), "human_review")
    assert not goes_on_without_the_turn(plan_of(plan), "human_review")


async def test_a_step_that_needs_the_turn_fails_after_a_review_and_says_why() -> None:
    plan = REVIEWED.replace(
        '{tool: crm_note, arguments: {text: "response.content", by: "state.review.decision"}}',
        "evaluate",
    )
    reply = await paused_reply()  # the snapshot of the plan that can go on

    done = await continue_plan(
        plan_of(plan),
        {**reply.plan_snapshot, "plan_digest": plan_of(plan).digest},
        review_outcome("approve"),
        tools=None,
        ledger=InMemoryResumeLedger(),
        origin=0.0,
        clock=time.time,
    )

    assert (done.status, done.node) == ("paused", "escalate")
    assert "needs the message's turn" in (done.path[1].error or "")


async def test_a_tool_that_needs_approval_pauses_the_plan_again() -> None:
    reply = await paused_reply()
    tools = ScriptedTools({"crm_note": ToolResult("needs_approval", error="dangerous")})

    done = await go_on(reply.plan_snapshot, review_outcome("edit"), tools)

    assert done.status == "paused"
    assert done.snapshot is not None
    assert done.snapshot["node"] == "note"
    assert done.snapshot["token"] != reply.plan_snapshot["token"]
    approved = await go_on(
        done.snapshot, tool_outcome("ok", {"id": "n-2"}), tools, tool_id="crm_note"
    )
    assert approved.status == "deliver"
    assert [s.node for s in approved.path] == ["note", "deliver"]


async def test_a_snapshot_continues_once() -> None:
    reply = await paused_reply()
    tools = ScriptedTools({"crm_note": ToolResult("ok", {})})
    ledger = InMemoryResumeLedger()

    await go_on(reply.plan_snapshot, review_outcome("approve"), tools, ledger=ledger)
    with pytest.raises(AlreadyResumed):
        await go_on(reply.plan_snapshot, review_outcome("approve"), tools, ledger=ledger)
    assert len(tools.calls) == 1


async def test_a_changed_plan_refuses_an_old_snapshot() -> None:
    reply = await paused_reply()
    changed = REVIEWED.replace(
        "on_success: deliver\n    on_error: escalate", "on_success: escalate"
    )
    with pytest.raises(ResumeError):
        await continue_plan(
            plan_of(changed),
            reply.plan_snapshot,
            review_outcome("approve"),
            tools=None,
            ledger=InMemoryResumeLedger(),
            origin=0.0,
            clock=time.time,
        )
