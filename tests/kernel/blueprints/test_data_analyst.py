"""data_analyst_agent offline: question → template and bounded parameters → table + chart.

The port here is an in-memory `SupportData` over a list of run records (what the platform's
ORM port aggregates in the database); it records every call, so the tests also show that
only a template id, a fixed dimension and two datetimes ever reach a query.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow.kernel.blueprints.data_analyst import (
    DIMENSIONS,
    MAX_DAYS,
    TEMPLATES,
    DataAnalystAgent,
    extract_group_by,
    extract_period,
    match_template,
    mentioned_agent,
)

NOW = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
QUESTIONS = Path(__file__).parent / "data_analyst_questions.txt"


class InMemorySupportData:
    """Run volume and cost over in-memory runs; other templates answer no rows."""

    def __init__(self, runs: list[dict[str, Any]], *, fail: bool = False) -> None:
        self.runs = runs
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []
        self.agent_filters: list[str | None] = []

    async def agent_names(self) -> list[str]:
        if self.fail:
            raise ConnectionError("database unavailable")
        return sorted({run["agent"] for run in self.runs})

    async def query(
        self,
        template: str,
        group_by: str,
        start: datetime,
        end: datetime,
        *,
        agent: str | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append((template, group_by, start, end))
        self.agent_filters.append(agent)
        if self.fail:
            raise ConnectionError("database unavailable")
        groups: dict[Any, dict[str, Any]] = defaultdict(
            lambda: {"runs": 0, "completed": 0, "failed": 0, "tokens": 0, "cost_usd": 0.0}
        )
        for run in self.runs:
            if not start <= run["at"] < end or agent not in (None, run["agent"]):
                continue
            key = run["at"].date() if group_by == "day" else run[group_by]
            row = groups[key]
            row["runs"] += 1
            row[run["status"]] += 1
            row["tokens"] += run["tokens"]
            row["cost_usd"] += run["cost"]
        return [{group_by: key, **row} for key, row in groups.items()]


def _runs() -> list[dict[str, Any]]:
    def run(hours_ago: float, agent: str, intent: str, status: str = "completed") -> dict[str, Any]:
        return {
            "at": NOW - timedelta(hours=hours_ago),
            "agent": agent,
            "intent": intent,
            "status": status,
            "tokens": 400,
            "cost": 0.002,
        }

    return [
        run(2, "billing-bot", "BILLING"),
        run(5, "billing-bot", "REFUND"),
        run(30, "access-bot", "PASSWORD_RESET", "failed"),
        run(50, "access-bot", "PASSWORD_RESET"),
        run(24 * 20, "billing-bot", "BILLING"),  # outside "last 7 days"
    ]


def _agent(data: InMemorySupportData, config: dict[str, Any] | None = None) -> DataAnalystAgent:
    return DataAnalystAgent(config or {}, data=data, clock=NOW.timestamp)


@pytest.mark.parametrize(
    ("question", "template"),
    [
        ("How many runs did we have in the last 7 days?", "run_volume"),
        ("number of conversations per topic since 2026-11-01", "run_volume"),
        ("How many tickets failed today?", "run_volume"),
        ("What is our escalation rate by agent this month?", "escalation_rate"),
        ("Are we handing off too much to humans?", "escalation_rate"),
        ("escalations per day", "escalation_rate"),
        ("Show me CSAT per intent for the past 2 weeks", "csat"),
        ("average rating by agent", "csat"),
        ("How satisfied were customers between 2026-10-01 and 2026-10-31?", "csat"),
        ("How much did we spend last month, by agent?", "cost"),
        ("How many tokens did we use yesterday?", "cost"),
        ("What did we pay for the LLM over the last 3 months?", "cost"),
        ("Which reviews breached their SLA last week, by priority?", "sla_breaches"),
        ("overdue reviews", "sla_breaches"),
        ("What's the weather in Paris?", None),
        ("tell me a joke", None),
    ],
)
def test_questions_select_the_template_that_answers_them(
    question: str, template: str | None
) -> None:
    found = match_template(question)
    assert (found.template.id if found.template else None) == template, found.scores


def test_template_accuracy_on_the_labelled_questions() -> None:
    lines = QUESTIONS.read_text().splitlines()
    labelled = [line.split("|", 1) for line in lines if line and not line.startswith("#")]
    got = {question: match_template(question).template for _, question in labelled}
    picked = {q: (template.id if template else "none") for q, template in got.items()}
    right = sum(picked[question] == label for label, question in labelled)
    assert len(labelled) == 78
    assert right / len(labelled) >= 0.95, right
    # Out-of-scope questions never get a table.
    assert all(got[question] is None for label, question in labelled if label == "none")


@pytest.mark.parametrize(
    ("question", "label", "days", "clamped"),
    [
        ("runs in the last 7 days", "last 7 days", 7, None),
        ("cost over the past two weeks", "last 2 weeks", 14, None),
        ("csat last month", "last 1 month", 30, None),
        ("escalations yesterday", "yesterday", 1, None),
        ("runs today", "today", 1, None),
        ("runs this month", "this month", 3, None),
        ("cost since 2026-11-01", "since 2026-11-01", 33, None),
        ("csat between 2026-10-01 and 2026-10-31", "2026-10-01 to 2026-10-31", 31, None),
        ("cost over the last 2 years", "last 2 years", MAX_DAYS, 730),
        ("runs in the last 100000 days", "last 100000 days", MAX_DAYS, 100000),
        ("how many runs?", "last 30 days", 30, None),
    ],
)
def test_periods_are_read_and_bounded(
    question: str, label: str, days: int, clamped: int | None
) -> None:
    period = extract_period(question, NOW)
    assert (period.label, period.days, period.clamped_from_days) == (label, days, clamped)
    assert period.end <= NOW


def test_yesterday_is_the_whole_calendar_day() -> None:
    period = extract_period("runs yesterday", NOW)
    assert period.start == datetime(2026, 12, 2, tzinfo=UTC)
    assert period.end == datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("question", "group_by"),
    [
        ("cost by agent", "agent"),
        ("runs per day", "day"),
        ("daily escalation rate", "day"),
        ("csat trend", "day"),
        ("escalation rate broken down by category", "intent"),
        ("breaches by priority", "priority"),
        ("which agents escalate most", "agent"),
        ("how many runs", None),
    ],
)
def test_groupings_are_read(question: str, group_by: str | None) -> None:
    assert extract_group_by(question) == group_by


def test_every_template_offers_known_dimensions_and_a_default() -> None:
    for template in TEMPLATES:
        assert template.dimensions
        assert set(template.dimensions) <= set(DIMENSIONS)
        assert set(template.additive) <= set(template.measures)


async def test_runs_by_agent_is_a_bar_table_biggest_first() -> None:
    data = InMemorySupportData(_runs())
    result = await _agent(data).run("How many runs by agent in the last 7 days?", user_id="ana")

    output = result.state.plan_state.state["output"]
    assert output["template"] == "run_volume"
    assert output["columns"] == ["agent", "runs", "completed", "failed"]
    assert output["rows"] == [["access-bot", 2, 1, 1], ["billing-bot", 2, 2, 0]]
    assert output["chart"] == {"type": "bar", "x": "agent", "y": "runs"}
    assert output["parameters"]["group_by"] == "agent"
    assert result.state.plan_state.response["content"] == (
        "Run volume, last 7 days, by agent: runs 4 in total."
    )
    assert result.plan is not None
    assert [step.node for step in result.plan.path] == [
        "match_template",
        "extract_parameters",
        "run_query",
        "answer",
    ]
    (call,) = data.calls
    assert call[:2] == ("run_volume", "agent")
    assert call[3] - call[2] == timedelta(days=7)


async def test_cost_by_day_fills_every_day_with_zero() -> None:
    data = InMemorySupportData(_runs())
    result = await _agent(data).run("What did we spend per day in the last 3 days?")

    output = result.state.plan_state.state["output"]
    assert output["template"] == "cost"
    assert output["chart"] == {"type": "line", "x": "day", "y": "cost_usd"}
    days = [row[0] for row in output["rows"]]
    assert days == ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
    cost = {row[0]: row[1] for row in output["rows"]}
    assert cost == {"2026-11-30": 0, "2026-12-01": 0.002, "2026-12-02": 0.002, "2026-12-03": 0.004}


async def test_a_grouping_the_template_lacks_falls_back_and_says_so() -> None:
    data = InMemorySupportData(_runs())
    result = await _agent(data).run("How many runs by priority last week?")

    parameters = result.state.plan_state.state["output"]["parameters"]
    assert parameters["group_by"] == "day"
    assert parameters["group_by_refused"] == "priority"
    assert "cannot be grouped by priority" in result.state.plan_state.response["content"]


async def test_an_unknown_question_lists_what_can_be_answered_without_querying() -> None:
    data = InMemorySupportData(_runs())
    result = await _agent(data).run("Write me a poem about the sea")

    plan = result.state.plan_state
    assert plan.state["output"]["template"] is None
    assert [item["template"] for item in plan.state["output"]["answerable"]] == [
        t.id for t in TEMPLATES
    ]
    assert plan.response["content"].startswith("I can answer questions about your own support")
    assert plan.state["escalate"] is False
    assert data.calls == []
    assert result.status == "completed"


async def test_a_failing_query_is_an_answer_not_a_crash() -> None:
    data = InMemorySupportData([], fail=True)
    result = await _agent(data).run("cost by agent last week")

    plan = result.state.plan_state
    assert result.status == "completed"
    assert plan.state["output"] == {"template": "cost", "error": "query failed"}
    assert "could not read the data" in plan.response["content"]


async def test_question_text_never_reaches_a_query() -> None:
    data = InMemorySupportData(_runs())
    question = "cost by agent'; DROP TABLE agentflow_run; -- last 7 days"
    result = await _agent(data).run(question)

    assert result.state.plan_state.state["output"]["template"] == "cost"
    ((template, group_by, start, end),) = data.calls
    assert (template, group_by) == ("cost", "agent")
    assert isinstance(start, datetime)
    assert isinstance(end, datetime)


async def test_a_question_naming_an_agent_narrows_to_it() -> None:
    data = InMemorySupportData(_runs())
    result = await _agent(data).run("How many runs did Billing-Bot handle per intent last week?")

    output = result.state.plan_state.state["output"]
    assert output["template"] == "run_volume"
    assert output["parameters"]["agent"] == "billing-bot"
    assert data.agent_filters == ["billing-bot"]
    assert output["rows"] == [["BILLING", 1, 1, 0], ["REFUND", 1, 1, 0]]
    assert result.state.plan_state.response["content"].startswith(
        "Run volume of billing-bot, last 1 week, by intent"
    )


def test_agent_names_match_as_whole_names_and_the_longest_wins() -> None:
    names = ["bot", "billing", "billing-bot", "access-bot"]
    assert mentioned_agent("cost of billing-bot", names) == "billing-bot"
    assert mentioned_agent("cost of billing", names) == "billing"
    assert mentioned_agent("cost of billing-botany", names) is None
    assert mentioned_agent("escalations per day", names) is None


async def test_an_agent_named_like_a_metric_does_not_pick_the_template() -> None:
    runs = [{**run, "agent": "csat survey"} for run in _runs()]
    data = InMemorySupportData(runs)
    result = await _agent(data).run("what did csat survey cost last week?")

    output = result.state.plan_state.state["output"]
    assert output["template"] == "cost"
    assert output["parameters"]["agent"] == "csat survey"


async def test_config_bounds_the_period_and_the_default() -> None:
    data = InMemorySupportData(_runs())
    agent = _agent(data, {"max_days": 14, "default_days": 10})

    await agent.run("how many runs")
    await agent.run("how many runs in the last 90 days")
    (_, _, start, end), (_, _, long_start, long_end) = data.calls
    assert end - start == timedelta(days=10)
    assert long_end - long_start == timedelta(days=14)
