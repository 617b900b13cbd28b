"""data_analyst_agent through the API: tables over a tenant's own runs, feedback and reviews.

Both tenants get support data (tenant B more of everything), so every number asserted for
tenant A also proves that tenant B's rows never reach A's answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from agentflow.models import Agent, Run
from agentflow.services import create_agent
from hitl.models import HITLRequest
from learning.models import Feedback
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"


def _support_agent(persona: Persona, name: str) -> Agent:
    return create_agent(
        actor=ACTOR,
        tenant=persona.tenant,
        name=name,
        blueprint="support_agent",
        config=SUPPORT_CONFIG,
    )


def _run(agent: Agent, *, days_ago: float, intent: str, **fields: Any) -> Run:
    at = timezone.now() - timedelta(days=days_ago)
    return Run.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        user_id="customer",
        input="question",
        status=fields.pop("status", "completed"),
        result={"intent": intent, "escalated": False, "content": "answer"},
        created_at=at,
        **fields,
    )


def _review(run: Run, *, priority: str, breached: bool) -> HITLRequest:
    return HITLRequest.objects.create(
        tenant_id=run.tenant_id,
        run=run,
        kind="low_confidence",
        priority=priority,
        priority_rank={"low": 1, "medium": 2, "high": 3, "critical": 4}[priority],
        status="approved" if breached else "pending",
        question=run.input,
        required_role="reviewer",
        sla_deadline=run.created_at + timedelta(minutes=30),
        breached_at=run.created_at + timedelta(minutes=31) if breached else None,
        created_at=run.created_at,
    )


def _feedback(run: Run, rating: int) -> Feedback:
    return Feedback.objects.create(
        tenant_id=run.tenant_id, run=run, kind="rating", rating=rating, score=(rating - 1) / 4
    )


def _seed_owner(persona: Persona) -> None:
    """Tenant A: 5 runs in the last week over two agents, 1 older than 30 days."""
    billing, access = _support_agent(persona, "billing-bot"), _support_agent(persona, "access-bot")
    with tenant_scope(persona.tenant.pk):
        a = _run(billing, days_ago=1, intent="BILLING", tokens=1000, cost_usd=Decimal("0.02"))
        b = _run(billing, days_ago=2, intent="BILLING", tokens=500, cost_usd=Decimal("0.01"))
        c = _run(access, days_ago=2, intent="PASSWORD_RESET", tokens=200, cost_usd=Decimal("0.004"))
        d = _run(access, days_ago=3, intent="PASSWORD_RESET", status="failed")
        e = _run(access, days_ago=5, intent="HUMAN_AGENT", status="awaiting_review")
        _run(billing, days_ago=40, intent="BILLING", tokens=9999, cost_usd=Decimal("9"))
        _review(e, priority="high", breached=True)
        _review(c, priority="medium", breached=False)
        _feedback(a, 5)
        _feedback(b, 4)
        _feedback(c, 1)
        del d


def _seed_outsider(persona: Persona) -> None:
    """Tenant B: more runs, a costlier one, breached reviews and bad ratings, all recent."""
    other = _support_agent(persona, "billing-bot")
    with tenant_scope(persona.tenant.pk):
        for _ in range(8):
            run = _run(other, days_ago=1, intent="BILLING", tokens=7777, cost_usd=Decimal("1.5"))
            _review(run, priority="high", breached=True)
            _feedback(run, 1)


@pytest.fixture
def seeded(owner: Persona, outsider: Persona) -> None:
    _seed_owner(owner)
    _seed_outsider(outsider)


def _analyst(persona: Persona, config: dict[str, Any] | None = None) -> str:
    body = {"name": "analyst", "blueprint": "data_analyst_agent", "config": config or {}}
    response = persona.post(AGENTS, body)
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def _ask_run(persona: Persona, agent_id: str, question: str) -> dict[str, Any]:
    response = persona.post(
        f"{AGENTS}/{agent_id}/runs",
        {"user_id": "analyst-user", "message": question},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body = dict(response.json())
    assert body["status"] == "completed", body
    return body


def _ask(persona: Persona, agent_id: str, question: str) -> dict[str, Any]:
    return dict(_ask_run(persona, agent_id, question)["result"])


def _table(output: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    columns = output["columns"]
    return {row[0]: dict(zip(columns, row, strict=True)) for row in output["rows"]}


def test_runs_by_agent_count_only_the_tenants_own_runs(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    analyst = _analyst(owner)
    result = _ask(owner, analyst, "How many runs did we handle by agent in the last 7 days?")

    output = result["metadata"]["output"]
    assert output["template"] == "run_volume"
    assert output["parameters"]["group_by"] == "agent"
    assert output["parameters"]["period"]["days"] == 7
    assert output["columns"] == ["agent", "runs", "completed", "failed"]
    assert output["chart"] == {"type": "bar", "x": "agent", "y": "runs"}
    # Tenant B's 8 runs of its own "billing-bot" are not here; nor the analyst's own run.
    assert output["rows"] == [["access-bot", 3, 1, 1], ["billing-bot", 2, 2, 0]]
    assert result["escalated"] is False
    assert result["intent"] == "run_volume"
    # The worked example of docs/blueprints.md.
    assert result["content"] == "Run volume, last 7 days, by agent: runs 5 in total."


def test_cost_by_day_is_a_line_with_every_day_of_the_period(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    result = _ask(owner, _analyst(owner), "What did we spend per day over the last 7 days?")

    output = result["metadata"]["output"]
    assert output["template"] == "cost"
    assert output["chart"] == {"type": "line", "x": "day", "y": "cost_usd"}
    rows = _table(output)
    assert len(rows) == 8  # 7 days back from now touch 8 calendar days
    today = datetime.now(UTC).date()
    assert rows[(today - timedelta(days=2)).isoformat()]["cost_usd"] == pytest.approx(0.014)
    assert rows[(today - timedelta(days=2)).isoformat()]["tokens"] == 700
    assert rows[(today - timedelta(days=4)).isoformat()]["cost_usd"] == 0
    assert sum(row["cost_usd"] for row in rows.values()) == pytest.approx(0.034)


def test_escalation_rate_and_csat_by_intent(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    analyst = _analyst(owner)
    rate = _ask(owner, analyst, "What is our escalation rate by intent in the last 30 days?")
    rows = _table(rate["metadata"]["output"])
    assert rows["PASSWORD_RESET"]["escalated"] == 1
    assert rows["PASSWORD_RESET"]["escalation_rate"] == pytest.approx(0.5)
    assert rows["HUMAN_AGENT"]["escalation_rate"] == 1.0
    assert rows["BILLING"]["escalation_rate"] == 0.0  # tenant B's 8 escalations are not here

    csat = _ask(owner, analyst, "Show me CSAT per intent for the past 2 weeks")
    output = csat["metadata"]["output"]
    assert output["template"] == "csat"
    rows = _table(output)
    assert rows["BILLING"]["responses"] == 2
    assert rows["BILLING"]["csat"] == 1.0  # 5 and 4; tenant B's eight 1-star ratings absent
    assert rows["BILLING"]["avg_rating"] == 4.5
    assert rows["PASSWORD_RESET"]["csat"] == 0.0


def test_a_named_agent_narrows_to_the_tenants_agent_of_that_name(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    result = _ask(owner, _analyst(owner), "What is the CSAT of billing-bot in the last 7 days?")

    output = result["metadata"]["output"]
    assert output["template"] == "csat"
    assert output["parameters"]["agent"] == "billing-bot"
    # Tenant B's agent is also called billing-bot: its eight 1-star ratings stay out.
    rows = [dict(zip(output["columns"], row, strict=True)) for row in output["rows"]]
    assert sum(row["responses"] for row in rows) == 2
    assert {row["csat"] for row in rows if row["responses"]} == {1.0}


def test_sla_breaches_by_priority(owner: Persona, seeded: None, celery_worker_app: object) -> None:
    result = _ask(
        owner, _analyst(owner), "Which reviews breached their SLA last week, by priority?"
    )

    rows = _table(result["metadata"]["output"])
    assert rows == {
        "high": {"priority": "high", "breached": 1, "reviews": 1, "breach_rate": 1.0},
        "medium": {"priority": "medium", "breached": 0, "reviews": 1, "breach_rate": 0.0},
    }


def test_a_question_no_template_answers_lists_what_can_be_answered(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    run = _ask_run(owner, _analyst(owner), "What's the weather like in Paris?")
    result = run["result"]

    assert result["escalated"] is False
    assert result["metadata"]["output"]["template"] is None
    answerable = {item["template"] for item in result["metadata"]["output"]["answerable"]}
    assert answerable == {"run_volume", "escalation_rate", "csat", "cost", "sla_breaches"}
    assert "Escalation rate" in result["content"]
    assert "by agent" in result["content"]
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert [step["node"] for step in steps] == ["match_template", "list_capabilities"]


def test_a_period_longer_than_the_limit_is_cut_and_says_so(
    owner: Persona, seeded: None, celery_worker_app: object
) -> None:
    analyst = _analyst(owner, {"max_days": 30})
    result = _ask(owner, analyst, "cost per run by intent in the last 2 years")

    period = result["metadata"]["output"]["parameters"]["period"]
    assert period["days"] == 30
    assert period["clamped_from_days"] == 730
    assert "limited to 30 days" in result["content"]
    assert _table(result["metadata"]["output"])["BILLING"]["tokens"] == 1500  # not the 40-day one


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"max_days": 400}, "max_days"),
        ({"default_days": 0}, "default_days"),
        ({"min_score": "high"}, "min_score"),
        ({"sql": "select 1"}, "sql"),
    ],
    ids=["max-days", "default-days", "min-score", "unknown-key"],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = owner.post(
            AGENTS, {"name": "bad", "blueprint": "data_analyst_agent", "config": config}
        )
    assert_field_errors(response, field)


def test_another_tenants_analyst_is_404(owner: Persona, outsider: Persona) -> None:
    analyst = _analyst(owner)
    with nothing_written(owner.tenant, outsider.tenant):
        response = outsider.post(
            f"{AGENTS}/{analyst}/runs", {"user_id": "x", "message": "How many runs?"}
        )
    assert response.status_code == 404
    assert outsider.get(f"{AGENTS}/{analyst}").status_code == 404
