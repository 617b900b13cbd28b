"""qa_test_agent offline: suites run against a real (offline, in-memory) support pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from agentflow import AgentFrameworkBuilder, IntentCategory
from agentflow.kernel.blueprints.qa_test import (
    QATestAgent,
    SuiteError,
    TargetError,
    compare,
    format_report,
    load_suite,
)
from agentflow.kernel.pipeline import AgentPipeline
from agentflow.kernel.results import AgentReply

CATEGORIES = [
    IntentCategory(
        "PASSWORD_RESET",
        "Resetting or changing a password",
        [
            "how do I reset my password",
            "I forgot my password",
            "password reset link does not work",
            "change my password",
        ],
    ),
    IntentCategory(
        "BILLING",
        "Invoices, charges and refunds",
        ["I was charged twice", "where is my invoice", "I want a refund"],
    ),
    IntentCategory(
        "HUMAN_AGENT",
        "Wants a person",
        ["I want to talk to a human", "let me speak to a person"],
        0.0,
    ),
]
KNOWLEDGE = [
    {
        "id": "kb-reset",
        "title": "Resetting your password",
        "text": "To reset your password, open Settings, choose Security and click "
        "'Reset password'. We email you a link that is valid for 30 minutes.",
    },
    {
        "id": "kb-refunds",
        "title": "Refunds",
        "text": "Refunds are issued to the original card within 5 business days. "
        "You can request a refund from the Billing page.",
    },
]

PASSING = """\
agent: support
scenarios:
  - name: password reset is answered from the knowledge base
    turns:
      - user: How do I reset my password?
        expect:
          intent: PASSWORD_RESET
          contains: [Reset password, 30 minutes]
          not_contains: [colleague]
          escalated: false
  - name: asking for a person reaches a person
    turns:
      - user: I want to talk to a human please
        expect: {intent: HUMAN_AGENT, escalated: true}
  - name: off-topic questions are not answered
    turns:
      - user: What's the weather on Mars?
        expect: {escalated: true, not_contains: [Reset password]}
"""

FAILING = """\
agent: support
scenarios:
  - name: password reset
    turns:
      - user: How do I reset my password?
        expect: {intent: PASSWORD_RESET, escalated: false}
  - name: refunds promise a day count the article does not give
    turns:
      - user: How do I reset my password?
        expect: {intent: BILLING, contains: [within 24 hours], escalated: true}
"""


class KernelTarget:
    """A kernel pipeline as the agent under test (what the platform's port wraps)."""

    def __init__(self, pipeline: AgentPipeline, name: str = "support") -> None:
        self.pipeline = pipeline
        self.id = "kernel-support"
        self.name = name
        self.users: list[str] = []

    async def reply(self, *, user_id: str, message: str, context: Mapping[str, Any]) -> AgentReply:
        self.users.append(user_id)
        return await self.pipeline.process_message(user_id, message, dict(context))

    async def forget(self, user_id: str) -> None:
        await self.pipeline.forget_user(user_id)


class Directory:
    def __init__(self, *targets: KernelTarget) -> None:
        self.targets = {t.name: t for t in targets} | {t.id: t for t in targets}

    async def open(self, ref: str) -> KernelTarget:
        if ref not in self.targets:
            raise TargetError(f"no agent {ref!r} in this tenant")
        return self.targets[ref]


@pytest.fixture
async def support() -> Any:
    pipeline = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .with_confidence_thresholds({"HUMAN_AGENT": 0.0})
        .build()
    )
    yield KernelTarget(pipeline)
    await pipeline.aclose()


async def _run(agent: QATestAgent, message: str, **context: Any) -> dict[str, Any]:
    result = await agent.run(message, user_id="qa-user", context=context)
    plan = result.state.plan_state
    assert result.plan is not None
    assert result.plan.status == "completed"
    assert plan.state["escalate"] is False, "a suite's outcome never needs a person"
    return {"content": plan.response["content"], "intent": plan.intent["name"], **plan.state}


async def test_a_passing_suite_reports_every_turn_as_passed(support: KernelTarget) -> None:
    agent = QATestAgent({}, targets=Directory(support))
    ran = await _run(agent, PASSING, run_id="run-1")
    report = ran["output"]
    assert ran["intent"] == "QA_PASSED"
    assert (report["valid"], report["passed"], report["failed"], report["total"]) == (
        True,
        3,
        0,
        3,
    )
    assert report["turns"] == {"passed": 3, "failed": 0}
    first = report["scenarios"][0]["turns"][0]
    assert first["actual"]["intent"] == "PASSWORD_RESET"
    assert "Reset password" in first["actual"]["content"]
    assert first["expected"] == {
        "intent": "PASSWORD_RESET",
        "contains": ["Reset password", "30 minutes"],
        "not_contains": ["colleague"],
        "escalated": False,
    }
    assert first["diff"] == []
    assert ran["content"].startswith("3 of 3 scenario(s) passed against 'support'")
    # One conversation per scenario, each erased afterwards.
    assert support.users == ["qa-test:run-1:0", "qa-test:run-1:1", "qa-test:run-1:2"]
    for user in set(support.users):
        assert await support.pipeline.session(user) is None


async def test_scenarios_run_concurrently_are_reported_in_order(support: KernelTarget) -> None:
    agent = QATestAgent({"concurrency": 3}, targets=Directory(support))
    report = (await _run(agent, PASSING, run_id="run-2"))["output"]
    assert report["passed"] == 3
    assert [s["user_id"] for s in report["scenarios"]] == [
        "qa-test:run-2:0",
        "qa-test:run-2:1",
        "qa-test:run-2:2",
    ]
    assert [s["name"] for s in report["scenarios"]] == [
        "password reset is answered from the knowledge base",
        "asking for a person reaches a person",
        "off-topic questions are not answered",
    ]


async def test_a_failing_suite_names_each_broken_expectation(support: KernelTarget) -> None:
    agent = QATestAgent({"target_agent": "support"}, targets=Directory(support))
    ran = await _run(agent, FAILING)
    report = ran["output"]
    assert ran["intent"] == "QA_FAILED"
    assert (report["passed"], report["failed"]) == (1, 1)
    failing = report["scenarios"][1]
    assert failing["passed"] is False
    diff = {entry["field"]: entry for entry in failing["turns"][0]["diff"]}
    assert set(diff) == {"intent", "contains", "escalated"}
    assert diff["intent"]["expected"] == "BILLING"
    assert diff["intent"]["actual"] == "PASSWORD_RESET"
    assert diff["contains"]["expected"] == "within 24 hours"
    assert "Reset password" in diff["contains"]["actual"]
    assert (diff["escalated"]["expected"], diff["escalated"]["actual"]) == (True, False)
    assert "FAIL refunds promise a day count" in ran["content"]
    assert "turn 1 intent: expected 'BILLING', got 'PASSWORD_RESET'" in ran["content"]


async def test_a_conversation_keeps_its_context_across_turns(support: KernelTarget) -> None:
    suite = {
        "agent": "support",
        "scenarios": [
            {
                "name": "two turns, one conversation",
                "turns": [
                    {"user": "How do I reset my password?", "expect": {"escalated": False}},
                    {"user": "I want to talk to a human", "expect": {"escalated": True}},
                ],
            }
        ],
    }
    agent = QATestAgent({"keep_conversations": True}, targets=Directory(support))
    report = (await _run(agent, "run the suite", metadata={"scenarios": suite}))["output"]
    assert report["passed"] == 1
    user = report["scenarios"][0]["user_id"]
    session = await support.pipeline.session(user)
    assert session is not None
    assert session.message_count == 2


async def test_an_invalid_suite_is_reported_with_lines_and_fields(support: KernelTarget) -> None:
    text = """\
agent: support
scenarios:
  - name: typo in an expectation
    turns:
      - user: How do I reset my password?
        expect: {intnet: PASSWORD_RESET, escalated: maybe}
  - name: no turns
    turns: []
"""
    agent = QATestAgent({}, targets=Directory(support))
    ran = await _run(agent, text)
    assert ran["intent"] == "QA_INVALID"
    errors = ran["output"]["errors"]
    assert ran["output"]["valid"] is False
    assert {(e["line"], e["field"]) for e in errors} == {
        (6, "scenarios[0].turns[0].expect.intnet"),
        (6, "scenarios[0].turns[0].expect.escalated"),
        (8, "scenarios[1].turns"),
    }
    assert support.users == [], "nothing runs when the suite is invalid"
    assert "line 6, scenarios[0].turns[0].expect.intnet: unknown key" in ran["content"]


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ("scenarios: [\n  {name: a\n", 3, "suite", "not valid YAML"),
        ("x: &a [1]\nscenarios: *a\n", 1, "suite", "anchors and aliases"),
        ("- just a list\n", 1, "suite", "a suite is a mapping"),
        ("[" * 50_000 + "]" * 50_000, 1, "suite", "nested more than 20 levels deep"),
        ("scenarios: !!python/object:os.system {}\n", 1, "suite", "could not determine"),
        ("agent: a\nscenarios:\n  - name: a\n    turns:\n      - {}\n", 5, "scenarios[0]", ""),
        (
            "scenarios:\n  - {name: x, turns: [{user: hi}]}\n  - {name: x, turns: [{user: hi}]}\n",
            3,
            "scenarios[1].name",
            "another scenario is named 'x'",
        ),
    ],
)
def test_bad_suites_name_their_line(text: str, line: int, field: str, reason: str) -> None:
    with pytest.raises(SuiteError) as caught:
        load_suite(text)
    issue = caught.value.issues[0]
    assert (issue.line, issue.path.startswith(field)) == (line, True), caught.value.issues
    assert reason in issue.reason


def test_an_oversized_suite_is_refused_before_parsing() -> None:
    text = "scenarios:\n" + "  - {name: n, turns: [{user: hi}]}\n" * 6_000
    with pytest.raises(SuiteError, match="more than 200,000"):
        load_suite(text)


async def test_an_unknown_target_is_an_error_on_the_agent_line(support: KernelTarget) -> None:
    agent = QATestAgent({}, targets=Directory(support))
    ran = await _run(agent, "# regression suite\nagent: billing-bot\n" + PASSING.split("\n", 1)[1])
    assert ran["output"]["errors"] == [
        {"line": 2, "field": "agent", "reason": "no agent 'billing-bot' in this tenant"}
    ]
    missing = await _run(
        QATestAgent({}, targets=Directory(support)), "scenarios: [{name: a, turns: [{user: hi}]}]"
    )
    assert missing["output"]["errors"][0]["field"] == "agent"


async def test_max_turns_bounds_a_suite(support: KernelTarget) -> None:
    agent = QATestAgent({"max_turns": 2}, targets=Directory(support))
    ran = await _run(agent, PASSING + "  - name: fourth\n    turns: [{user: hello}]\n")
    assert ran["output"]["errors"][0]["reason"].startswith("the suite has 4 turns")
    assert support.users == []


async def test_a_target_that_does_not_answer_in_time_fails_the_turn(support: KernelTarget) -> None:
    class Slow(KernelTarget):
        async def reply(self, **kwargs: Any) -> AgentReply:
            await asyncio.sleep(5)
            raise AssertionError("not reached")

    slow = Slow(support.pipeline)
    agent = QATestAgent({"turn_timeout_seconds": 0.05}, targets=Directory(slow))
    report = (await _run(agent, FAILING))["output"]
    assert report["failed"] == 2
    diff = report["scenarios"][0]["turns"][0]["diff"]
    assert diff == [
        {
            "field": "reply",
            "expected": "an answer",
            "actual": "no answer within 0.05 s",
            "reason": "the agent under test failed to answer",
        }
    ]


def test_compare_checks_tool_calls_and_case() -> None:
    suite = load_suite(
        "scenarios:\n  - name: t\n    turns:\n"
        "      - user: where is order 42?\n"
        "        expect: {tool_call: order_lookup, contains: [SHIPPED], intent: order_status}\n"
    )
    expect = suite.scenarios[0].turns[0].expect
    actual = {"content": "Your order has shipped.", "intent": "ORDER_STATUS", "tool_calls": []}
    assert [e["field"] for e in compare(expect, actual)] == ["tool_call"]
    assert [e["field"] for e in compare(expect, actual, case_sensitive=True)] == [
        "intent",
        "contains",
        "tool_call",
    ]
    actual["tool_calls"] = ["order_lookup"]
    assert compare(expect, actual) == []


def test_the_text_report_lists_invalid_suites() -> None:
    try:
        load_suite("scenarios:\n  - name: a\n")
    except SuiteError as exc:
        from agentflow.kernel.blueprints.qa_test import invalid_report

        text = format_report(invalid_report(exc.issues))
    assert text.splitlines() == [
        "invalid suite: 1 error(s)",
        "line 2, scenarios[0].turns: Field required",
    ]


class OrderBook:
    """The shop's order lookup, as a tool client (the MCP SDK's `call_tool` shape)."""

    orders: ClassVar[dict[str, str]] = {"42": "shipped on 1 December by DHL"}

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        found = [f"order {k}: {v}" for k, v in self.orders.items() if k in arguments["query"]]
        return "; ".join(found) or "no such order"


async def test_tool_call_expectations_see_the_tools_a_turn_used() -> None:
    pipeline = await (
        AgentFrameworkBuilder()
        .with_intent_categories(
            [
                IntentCategory(
                    "ORDER_STATUS",
                    "Where an order is",
                    ["where is my order", "has my order shipped", "track my package"],
                ),
                *CATEGORIES,
            ]
        )
        .with_knowledge(KNOWLEDGE)
        .with_tools(
            {"order_lookup": {"intents": ["ORDER_STATUS"], "arguments": {"query": "message"}}}
        )
        .build(tool_client=OrderBook())
    )
    target = KernelTarget(pipeline, name="shop")
    suite = """\
agent: shop
scenarios:
  - name: order questions look the order up
    turns:
      - user: Where is my order 42?
        expect: {intent: ORDER_STATUS, tool_call: order_lookup}
  - name: password questions do not
    turns:
      - user: How do I reset my password?
        expect: {intent: PASSWORD_RESET, tool_call: order_lookup}
"""
    try:
        report = (await _run(QATestAgent({}, targets=Directory(target)), suite))["output"]
    finally:
        await pipeline.aclose()
    first, second = report["scenarios"]
    assert first["passed"] is True
    assert first["turns"][0]["actual"]["tool_calls"] == ["order_lookup"]
    assert second["turns"][0]["diff"] == [
        {
            "field": "tool_call",
            "expected": "order_lookup",
            "actual": [],
            "reason": "the tool was not called",
        }
    ]
