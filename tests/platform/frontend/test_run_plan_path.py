"""The run page shows the planner's path (issue 16): the steps GET /runs/{id}/steps serves."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils.html import escape

from agentflow.models import Agent, AgentSession, Run, RunStatus
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_
from tests.platform.hitl.conftest import escalated_run

PLAN_NODES = re.compile(rb'data-plan-node="([^"]*)"')
CONDITIONS = re.compile(rb'<code data-field="condition">([^<]*)</code>')


def _page(user: User_, run: Run) -> bytes:
    response = user.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    return bytes(response.content)


def _stored_run(agent: Agent, **fields: Any) -> Run:
    """A run written through the ORM, as a worker would have left it."""
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer-9")
        return Run.objects.create(
            agent=agent, session=session, user_id=session.user_id, input="Hi", **fields
        )


def _step(node: str, **fields: Any) -> dict[str, Any]:
    base = {"action": f"step:{node}", "outcome": "success", "started_ms": 0.0}
    return {**base, "duration_ms": 1.5, "tokens": 0, "cost_usd": 0.0, "node": node, **fields}


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_a_processed_run_lists_its_planners_path_in_order(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    run = escalated_run(agent)
    assert run.result is not None
    path = run.result["plan_path"]
    body = _page(viewer, run)

    assert b'data-testid="plan-path-empty"' not in body
    nodes = [node.decode() for node in PLAN_NODES.findall(body)]
    assert nodes == [step["node"] for step in path]
    assert nodes[:4] == ["classify", "context", "generate_response", "evaluate"]
    evaluate = next(step for step in path if step["node"] == "evaluate")
    assert evaluate["condition"], "the support FSM's evaluate state decides on a condition"
    assert CONDITIONS.findall(body) == [escape(evaluate["condition"]).encode()]
    assert f"via {evaluate['via']}".encode() in body


@pytest.mark.django_db
def test_a_run_without_a_path_says_so_in_one_line(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    waiting = _stored_run(agent)
    before_issue_16 = _stored_run(
        agent,
        status=RunStatus.COMPLETED,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        result={"content": "Done.", "intent": "general", "transition": "deliver"},
    )

    for run, line in (
        (waiting, b"No planner path yet"),
        (before_issue_16, b"No planner path recorded"),
    ):
        body = _page(viewer, run)
        assert body.count(b'data-testid="plan-path-empty"') == 1
        assert line in body
        assert b'data-testid="plan-path"' not in body


@pytest.mark.django_db
def test_conditions_errors_and_usage_are_shown_as_escaped_text(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    condition = 'response.confidence < 0.5 && message != "<script>alert(1)</script>"'
    path = [
        _step("classify", transition="evaluate", via="on_success", tokens=42, cost_usd=0.0021),
        _step("evaluate", transition="human_review", via="on_true", condition=condition, tokens=7),
        _step("human_review", outcome="error", error="<b>queue down</b>"),
    ]
    run = _stored_run(
        agent,
        status=RunStatus.COMPLETED,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        result={"content": "Done.", "plan_path": path},
    )
    body = _page(viewer, run)

    assert [n.decode() for n in PLAN_NODES.findall(body)] == [
        "classify",
        "evaluate",
        "human_review",
    ]
    assert CONDITIONS.findall(body) == [escape(condition).encode()]
    assert b"<script>alert(1)" not in body
    assert escape("<b>queue down</b>").encode() in body
    assert b"42 tokens \xc2\xb7 &lt; $0.01" in body  # to the cent: below one says so
    # Usage only where a step spent something; no dict reprs.
    assert b'data-field="usage">7 tokens</div>' in body, "a cost of 0 is left out"
    assert body.count(b'data-field="usage"') == 2
    assert b"{&#x27;" not in body
    assert b"{'" not in body
    assert b"end of the plan" in body
