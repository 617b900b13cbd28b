"""/metrics reads runs, tool calls, reviews, LLM usage and golden-path answers from
PostgreSQL at scrape time, so what workers did is counted (SPEC 12, issue 20)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client
from prometheus_client import REGISTRY

from agentflow.models import Agent, Run, RunStatus, Step, ToolCall
from hitl.models import PRIORITY_RANK, HITLRequest
from tests.platform.api.conftest import Persona
from tests.platform.api.conftest import owner as owner
from tests.platform.learning.conftest import make_sender, ticket_payload

pytestmark = pytest.mark.django_db


def _agent(persona: Persona, name: str, blueprint: str) -> Agent:
    return Agent.unscoped.create(tenant=persona.tenant, name=name, blueprint=blueprint)


def _run(agent: Agent, status: str, *, seconds: float | None = None, **fields: Any) -> Run:
    now = datetime.now(UTC)
    timing = {}
    if seconds is not None:
        timing = {"started_at": now - timedelta(seconds=seconds), "finished_at": now}
    return Run.unscoped.create(
        tenant=agent.tenant, agent=agent, user_id="u", input="q", status=status, **timing, **fields
    )


def _review(run: Run, priority: str, *, age: timedelta, breached: bool) -> HITLRequest:
    now = datetime.now(UTC)
    return HITLRequest.unscoped.create(
        tenant=run.tenant,
        run=run,
        kind="low_confidence",
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],
        question="q",
        required_role="reviewer",
        sla_deadline=now - age + timedelta(minutes=5),
        breached_at=now if breached else None,
        created_at=now - age,
    )


def _scrape(client: Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def _value(text: str, sample: str) -> float:
    """The value of the one exposition line that starts with ``sample``."""
    lines = [line for line in text.splitlines() if line.startswith(sample + " ")]
    assert len(lines) == 1, (sample, [x for x in text.splitlines() if "agentflow_" in x][:80])
    return float(lines[0].rsplit(" ", 1)[1])


def test_runs_by_blueprint_and_status_with_durations(client: Client, owner: Persona) -> None:
    support = _agent(owner, "support", "support_agent")
    analyst = _agent(owner, "analyst", "data_analyst")
    for seconds in (1.0, 2.0, 3.0):
        _run(support, RunStatus.COMPLETED, seconds=seconds)
    _run(support, RunStatus.FAILED, seconds=10.0)
    _run(analyst, RunStatus.PENDING)
    settled = _run(support, RunStatus.COMPLETED, seconds=0.5)
    for index, (stage, ms) in enumerate((("classify", 10.0), ("generate", 200.0))):
        Step.unscoped.create(
            tenant=owner.tenant, run=settled, index=index, name=stage, duration_ms=ms
        )
    text = _scrape(client)
    stage = "agentflow_run_stage_duration_seconds_last_hour"
    assert _value(text, f'{stage}{{quantile="0.5",stage="generate"}}') == pytest.approx(0.2)
    assert _value(text, f'{stage}{{quantile="0.95",stage="classify"}}') == pytest.approx(0.01)
    runs = "agentflow_runs_last_hour"
    assert _value(text, f'{runs}{{blueprint="support_agent",status="completed"}}') == 4
    assert _value(text, f'{runs}{{blueprint="support_agent",status="failed"}}') == 1
    assert _value(text, f'{runs}{{blueprint="data_analyst",status="pending"}}') == 1
    duration = "agentflow_run_duration_seconds_last_hour"
    p50 = _value(text, f'{duration}{{blueprint="support_agent",quantile="0.5"}}')
    assert p50 == pytest.approx(2.0, abs=0.05)  # median of 0.5, 1, 2, 3 and 10
    assert _value(text, f'{duration}{{blueprint="support_agent",quantile="max"}}') == (
        pytest.approx(10.0, abs=0.05)
    )
    assert 'blueprint="data_analyst",quantile' not in text  # nothing of it finished


def test_llm_tokens_and_cost_by_model_and_golden_path_rate(client: Client, owner: Persona) -> None:
    support = _agent(owner, "support", "support_agent")
    golden = {"kind": "golden_path", "id": "gp-1", "title": "Reset"}
    document = {"kind": "document", "id": "d-1", "title": "Refunds"}
    for sources in ([golden], [document], [document, golden], []):
        _run(
            support,
            RunStatus.COMPLETED,
            tokens=100,
            cost_usd=Decimal("0.0015"),
            result={"sources": sources, "metadata": {"model": "gpt-4o-mini"}},
        )
    _run(support, RunStatus.COMPLETED, tokens=7, result={"metadata": {"model": "other-llm"}})
    _run(support, RunStatus.FAILED)  # spent nothing, completed nothing
    text = _scrape(client)
    assert _value(text, 'agentflow_llm_tokens{model="gpt-4o-mini",window="1h"}') == 400
    assert _value(text, 'agentflow_llm_tokens{model="gpt-4o-mini",window="today"}') == 400
    assert _value(text, 'agentflow_llm_tokens{model="other-llm",window="1h"}') == 7
    cost = _value(text, 'agentflow_llm_cost_usd{model="gpt-4o-mini",window="1h"}')
    assert cost == pytest.approx(0.006)
    assert _value(text, 'agentflow_runs_completed{window="1h"}') == 5
    assert _value(text, 'agentflow_golden_path_answers{window="1h"}') == 2
    assert _value(text, 'agentflow_golden_path_answer_ratio{window="1d"}') == pytest.approx(0.4)


def test_tool_calls_and_the_review_queue(client: Client, owner: Persona) -> None:
    support = _agent(owner, "support", "support_agent")
    for index, status in enumerate(("ok", "ok", "error")):
        ToolCall.unscoped.create(
            tenant=owner.tenant,
            agent=support,
            tool="lookup_order",
            status=status,
            idempotency_key=f"key-{index}",
        )
    waiting = _run(support, RunStatus.AWAITING_REVIEW)
    _review(waiting, "high", age=timedelta(minutes=30), breached=True)
    _review(_run(support, RunStatus.AWAITING_REVIEW), "high", age=timedelta(0), breached=False)
    _review(_run(support, RunStatus.AWAITING_REVIEW), "low", age=timedelta(0), breached=False)
    text = _scrape(client)
    calls = "agentflow_tool_calls_last_hour"
    assert _value(text, f'{calls}{{status="ok",tool="lookup_order"}}') == 2
    assert _value(text, f'{calls}{{status="error",tool="lookup_order"}}') == 1
    assert _value(text, 'agentflow_hitl_open_requests{priority="high"}') == 2
    assert _value(text, 'agentflow_hitl_open_requests{priority="low"}') == 1
    oldest = _value(text, 'agentflow_hitl_oldest_open_age_seconds{priority="high"}')
    assert 1795 <= oldest <= 1900
    assert _value(text, 'agentflow_hitl_open_breached{priority="high"}') == 1
    assert _value(text, 'agentflow_hitl_open_breached{priority="low"}') == 0
    assert not re.search(r'tenant\w*="', text)  # never labelled by tenant


def test_webhook_deliveries_are_counted_by_verdict(owner: Persona) -> None:
    sender = make_sender(owner, "generic")

    def count(verdict: str) -> float:
        labels = {"provider": "generic", "verdict": verdict}
        return REGISTRY.get_sample_value("agentflow_webhook_deliveries_total", labels) or 0.0

    before = {verdict: count(verdict) for verdict in ("accepted", "duplicate", "rejected")}
    payload = ticket_payload("generic")
    assert sender.deliver(payload, delivery_id="d-1").status_code == 202
    assert sender.deliver(payload, delivery_id="d-1", retry=1).status_code == 200
    assert sender.deliver(payload, secret="not-the-secret-at-all-x").status_code == 401
    assert {verdict: count(verdict) - before[verdict] for verdict in before} == {
        "accepted": 1,
        "duplicate": 1,
        "rejected": 1,
    }


def test_metrics_answer_without_the_database_families_when_it_fails(
    client: Client, owner: Persona
) -> None:
    _run(_agent(owner, "support", "support_agent"), RunStatus.COMPLETED, seconds=1.0)
    assert "agentflow_runs_last_hour{" in _scrape(client)

    def refuse(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        raise OperationalError("connection refused (simulated)")

    with connection.execute_wrapper(refuse):
        text = _scrape(client)
    assert "agentflow_runs_last_hour{" not in text
    assert "agentflow_hitl_open_requests{" not in text
    assert "agentflow_http_requests_total{" in text  # the process's own families remain
