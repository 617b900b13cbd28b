"""The cost preflight before every run, against a real local OpenAI-compatible server (issue 16).

A hard budget below the estimate: the run goes to a person (``budget_preflight``) and the
server receives no request at all. A soft one: the run answers, with the warning in its
result. Either way the estimate and what the run spent are recorded in the run's result,
and ``GET /agents/{id}/preflight`` sums up how close the estimates came.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from agentflow import budgets, services
from agentflow.models import Run, RunStatus
from agentflow.services import create_agent
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, chat_completion
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona

pytestmark = pytest.mark.django_db(transaction=True)
ANSWER = "Open Settings, then Security, then Reset password."


def _answer(request: RecordedRequest) -> Any:
    # Usage as a server reports it: the prompt it received, counted (about 4 chars a token).
    return chat_completion(ANSWER, prompt_tokens=max(len(request.text()) // 4, 1))


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=_answer) as server:
        yield server


def _agent(
    owner: Persona, llm: FakeOpenAIServer, settings: Any, monkeypatch: Any, budget: Any
) -> Any:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [llm.base_url]}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    provider = {
        "kind": "openai",
        "model": "gpt-4o-mini",
        "base_url": llm.base_url,
        "api_key": "${OPENAI_API_KEY}",
        "max_retries": 0,
    }
    config = {
        **copy.deepcopy(SUPPORT_CONFIG),
        "default_threshold": 0.05,
        "llm": {"providers": [provider]},
        "budget": budget,
    }
    return create_agent(
        actor=ACTOR, tenant=owner.tenant, name="budgeted", blueprint="support_agent", config=config
    )


def _run(owner: Persona, agent: Any) -> Any:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u1", "message": "how do I reset my password"},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_hard_budget_below_the_estimate_refuses_before_any_llm_call(
    owner: Persona,
    llm: FakeOpenAIServer,
    settings: Any,
    monkeypatch: Any,
    celery_worker_app: object,
) -> None:
    agent = _agent(owner, llm, settings, monkeypatch, {"hard_usd": 0.000001})

    body = _run(owner, agent)

    assert body["status"] == RunStatus.AWAITING_REVIEW
    result = body["result"]
    assert result["escalated"] is True
    assert result["escalation_reason"] == "budget_preflight"
    preflight = result["metadata"]["preflight"]
    assert preflight["verdict"] == "refused"
    assert preflight["estimated_tokens"] > 0
    assert preflight["max_usd"] > 0.000001
    assert preflight["actual_tokens"] == 0
    assert preflight["actual_usd"] == 0
    assert llm.requests == []  # the server never heard of this run
    with tenant_scope(owner.tenant.pk):
        assert HITLRequest.objects.filter(run_id=body["id"]).count() == 1
        assert Run.objects.get(pk=body["id"]).tokens == 0
    # Nothing was spent, so nothing says how good the estimate was.
    accuracy = owner.get(f"/api/v1/agents/{agent.pk}/preflight").json()
    assert accuracy == {"agent_id": str(agent.pk), "window": 200, "tokens": None}


def test_a_soft_budget_runs_with_the_warning_and_records_estimate_and_actual(
    owner: Persona,
    llm: FakeOpenAIServer,
    settings: Any,
    monkeypatch: Any,
    celery_worker_app: object,
) -> None:
    agent = _agent(owner, llm, settings, monkeypatch, {"soft_usd": 0.000001})

    body = _run(owner, agent)

    assert body["status"] == RunStatus.COMPLETED, body
    result = body["result"]
    assert result["content"] == ANSWER
    preflight = result["metadata"]["preflight"]
    assert preflight["verdict"] == "warn"
    assert any("soft budget" in w for w in result["metadata"]["warnings"])
    assert preflight["estimated_tokens"] > 0
    assert preflight["estimated_usd"] > 0
    assert len(llm.requests) >= 1
    assert preflight["actual_tokens"] == body["tokens"] > 0
    assert preflight["actual_usd"] > 0

    accuracy = owner.get(f"/api/v1/agents/{agent.pk}/preflight").json()
    error = abs(preflight["estimated_tokens"] - preflight["actual_tokens"])
    assert accuracy["tokens"]["runs"] == 1
    assert accuracy["tokens"]["p50_error"] == round(error / preflight["actual_tokens"], 4)


def test_an_offline_agents_runs_say_nothing_about_accuracy(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    body = _run(owner, agent)
    assert body["result"]["metadata"]["preflight"]["estimated_tokens"] == 0
    assert body["result"]["metadata"]["preflight"]["verdict"] == "ok"
    assert owner.get(f"/api/v1/agents/{agent.pk}/preflight").json()["tokens"] is None


def test_the_accuracy_of_a_foreign_agent_is_404(
    owner: Persona, outsider: Persona, agent: Any
) -> None:
    assert outsider.get(f"/api/v1/agents/{agent.pk}/preflight").status_code == 404


def _settled_copies(run_id: str, count: int, raw: int, actual: int) -> None:
    """Earlier runs of the agent whose estimates were off by actual/raw."""
    template = Run.objects.get(pk=run_id)
    for _ in range(count):
        copy_ = Run.objects.get(pk=template.pk)
        copy_.pk = uuid.uuid4()
        copy_.result = {
            **template.result,
            "metadata": {
                "preflight": {"estimated_tokens": raw, "raw_estimated_tokens": raw,
                              "token_scale": 1.0, "actual_tokens": actual},
            },
        }  # fmt: skip
        copy_.save(force_insert=True)


def test_the_estimate_learns_the_providers_token_count_from_the_agents_runs(
    owner: Persona,
    llm: FakeOpenAIServer,
    settings: Any,
    monkeypatch: Any,
    celery_worker_app: object,
) -> None:
    """After 20 runs whose provider counted 1.25 tokens per estimated token, the next run's
    estimate is scaled by 1.25 (and records what it was before, so scales never compound)."""
    agent = _agent(owner, llm, settings, monkeypatch, {"soft_usd": 100.0})
    first = _run(owner, agent)["result"]["metadata"]["preflight"]
    assert first["token_scale"] == 1.0  # nothing learnt yet: fewer than 20 runs
    assert first["raw_estimated_tokens"] == first["estimated_tokens"]
    with tenant_scope(owner.tenant.pk):
        run_id = Run.objects.get(agent=agent).pk
        _settled_copies(str(run_id), 20, raw=1000, actual=1250)
    services._token_scales.clear()  # the worker would read them again within minutes

    learnt = _run(owner, agent)["result"]["metadata"]["preflight"]

    assert learnt["token_scale"] == 1.25
    assert learnt["raw_estimated_tokens"] == first["raw_estimated_tokens"]
    assert learnt["estimated_tokens"] == pytest.approx(first["estimated_tokens"] * 1.25, abs=3)
    # The dry-run endpoint estimates with the same scale.
    dry = owner.post(
        f"/api/v1/agents/{agent.pk}/preflight", {"message": "how do I reset my password"}
    ).json()
    assert dry["token_scale"] == 1.25
    assert dry["tokens"] == learnt["estimated_tokens"]


def _spent_earlier_today(run_id: str, usd: str) -> None:
    """A settled run of the agent earlier today that cost ``usd``."""
    template = Run.objects.get(pk=run_id)
    template.pk = uuid.uuid4()
    template.cost_usd = Decimal(usd)
    template.save(force_insert=True)


def test_a_hard_budget_counts_what_the_agent_spent_today_across_workers(
    owner: Persona,
    llm: FakeOpenAIServer,
    settings: Any,
    monkeypatch: Any,
    celery_worker_app: object,
) -> None:
    """The day's spend (seeded from PostgreSQL when the day's counter is missing) plus the
    run's upper bound passes the hard budget: refused before any LLM call."""
    agent = _agent(owner, llm, settings, monkeypatch, {"hard_usd": 0.01})
    first = _run(owner, agent)
    assert first["status"] == RunStatus.COMPLETED
    assert first["result"]["metadata"]["preflight"]["spent_today_usd"] == 0.0
    spent_first = float(first["result"]["metadata"]["preflight"]["actual_usd"])
    assert budgets.spent_today(agent) == pytest.approx(spent_first, abs=1e-6)
    with tenant_scope(owner.tenant.pk):
        _spent_earlier_today(first["id"], "0.0099")
    budgets._Counter.get()[0].delete(budgets._key(agent, budgets._today().strftime("%Y%m%d")))
    calls = len(llm.requests)

    refused = _run(owner, agent)

    assert refused["status"] == RunStatus.AWAITING_REVIEW
    assert refused["result"]["escalation_reason"] == "budget_preflight"
    preflight = refused["result"]["metadata"]["preflight"]
    assert preflight["verdict"] == "refused"
    assert preflight["spent_today_usd"] == pytest.approx(0.0099 + spent_first, abs=1e-6)
    assert len(llm.requests) == calls  # the LLM never heard of it
    dry = owner.post(f"/api/v1/agents/{agent.pk}/preflight", {"message": "hi"}).json()
    assert dry["verdict"] == "refused"
    assert dry["spent_usd"] == pytest.approx(0.0099 + spent_first, abs=1e-6)


def test_concurrent_reservations_admit_exactly_what_the_hard_budget_holds(
    owner: Persona, agent: Any
) -> None:
    """40 runs at once, each bounded at $0.03, against $0.50 a day: exactly 16 go."""

    def reserve(_: int) -> budgets.DayReservation:
        try:
            with tenant_scope(owner.tenant.pk):  # as in a run worker
                return budgets.reserve(agent, 0.03, 0.5)
        finally:
            connection.close()  # back to the pool, as a run worker's thread gives it back

    with ThreadPoolExecutor(max_workers=8) as pool:  # fewer than the pool's connections
        outcomes = list(pool.map(reserve, range(40)))
    admitted = [r for r in outcomes if r.admitted]
    assert len(admitted) == 16
    assert all(r.exact for r in outcomes)
    with tenant_scope(owner.tenant.pk):
        assert budgets.spent_today(agent) == pytest.approx(0.48)
        for reservation in admitted:  # each actually spent a third of its bound
            budgets.settle(reservation, 0.01)
        assert budgets.spent_today(agent) == pytest.approx(0.16)
        assert budgets.reserve(agent, 0.03, 0.5).admitted  # room again
