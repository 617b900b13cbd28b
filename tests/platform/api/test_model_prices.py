"""Prices for self-hosted models (issue 20): an agent's ``llm.prices``, the operator's
``LLM_MODEL_PRICES``, then the built-in table, in a run's cost, its preflight and budgets.

The agents answer through a real local OpenAI-compatible server (`FakeOpenAIServer`) under a
model name the built-in table does not know, as an agent on Ollama or vLLM would; the runs
go through the API and a real Celery worker.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from agentflow.kernel.llm.base import ChatMessage, TokenUsage
from agentflow.kernel.metering import GuardedProvider
from agentflow.models import RunStatus
from agentflow.pipelines import blueprint_llm, validate_agent_config
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, chat_completion
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written
from tests.platform.manage_check import manage_check

pytestmark = pytest.mark.django_db(transaction=True)
AGENTS = "/api/v1/agents"
MODEL = "llama3.2"
ANSWER = "Open Settings, then Security, then Reset password."
# Every call of the server reports this usage, so a run's tokens say how many calls it paid.
PROMPT, COMPLETION = 300, 40


def _answer(request: RecordedRequest) -> Any:
    return chat_completion(ANSWER, prompt_tokens=PROMPT, completion_tokens=COMPLETION, model=MODEL)


@pytest.fixture
def llm(settings: Any) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=_answer) as server:
        settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [server.base_url]}
        yield server


def _config(llm: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    provider = {"kind": "openai", "model": MODEL, "base_url": llm.base_url, "max_retries": 0}
    prices = extra.pop("prices", None)
    return {
        **copy.deepcopy(SUPPORT_CONFIG),
        "default_threshold": 0.05,
        "llm": {"providers": [provider], **({"prices": prices} if prices else {})},
        **extra,
    }


def _create(owner: Persona, config: dict[str, Any]) -> dict[str, Any]:
    response = owner.post(AGENTS, {"name": "local", "blueprint": "support_agent", "config": config})
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def _run(owner: Persona, agent: dict[str, Any]) -> dict[str, Any]:
    response = owner.post(
        f"{AGENTS}/{agent['id']}/runs",
        {"user_id": "u1", "message": "how do I reset my password"},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    assert body["status"] == RunStatus.COMPLETED, body
    assert body["result"]["content"] == ANSWER
    return body


def _cost(run: dict[str, Any], input_per_million: float, output_per_million: float) -> Decimal:
    """What the run's calls cost at those prices (checking its tokens are n whole calls)."""
    calls, rest = divmod(run["tokens"], PROMPT + COMPLETION)
    assert calls >= 1
    assert rest == 0
    usd = calls * (PROMPT * input_per_million + COMPLETION * output_per_million) / 1_000_000
    return Decimal(str(round(usd, 6)))


def test_an_agent_priced_at_zero_costs_nothing_and_its_budget_never_refuses(
    owner: Persona, llm: FakeOpenAIServer, celery_worker_app: object
) -> None:
    # A hard budget of a millionth of a dollar: at the default price the preflight refuses.
    config = _config(
        llm,
        prices={"input_per_million": 0, "output_per_million": 0},
        budget={"hard_usd": 0.000001},
    )
    agent = _create(owner, config)
    assert agent["config"]["llm"]["prices"] == {"input_per_million": 0, "output_per_million": 0}

    run = _run(owner, agent)

    assert run["tokens"] > 0
    assert Decimal(run["cost_usd"]) == 0
    preflight = run["result"]["metadata"]["preflight"]
    assert preflight["verdict"] == "ok"
    assert preflight["estimated_tokens"] > 0
    assert preflight["estimated_usd"] == preflight["max_usd"] == 0
    assert preflight["actual_usd"] == 0
    estimate = owner.post(f"{AGENTS}/{agent['id']}/preflight", {"message": "reset my password"})
    assert estimate.status_code == 200
    assert estimate.json()["max_usd"] == 0
    usage = owner.get(f"{AGENTS}/{agent['id']}/usage").json()
    assert usage["totals"]["tokens"] == run["tokens"]
    assert Decimal(usage["totals"]["cost_usd"]) == 0


def test_an_agents_own_price_wins_over_the_operators_table(
    owner: Persona, llm: FakeOpenAIServer, settings: Any, celery_worker_app: object
) -> None:
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "LLM_MODEL_PRICES": {MODEL: {"input_per_million": 90.0, "output_per_million": 90.0}},
    }
    own = {"input_per_million": 0.5, "output_per_million": 1.5}
    agent = _create(owner, _config(llm, prices=own))

    run = _run(owner, agent)

    assert Decimal(run["cost_usd"]) == _cost(run, 0.5, 1.5) > 0
    preflight = run["result"]["metadata"]["preflight"]
    estimate = owner.post(f"{AGENTS}/{agent['id']}/preflight", {"message": "reset my password"})
    steps = [s for s in estimate.json()["steps"] if s["model"] == MODEL]
    assert steps
    expected = sum(s["prompt_tokens"] * 0.5 + s["completion_cap"] * 1.5 for s in steps) / 1e6
    assert estimate.json()["max_usd"] == pytest.approx(expected, abs=1e-6)
    assert 0 < preflight["estimated_usd"] <= preflight["max_usd"]


def test_without_its_own_price_the_operators_table_prices_the_model(
    owner: Persona, llm: FakeOpenAIServer, settings: Any, celery_worker_app: object
) -> None:
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "LLM_MODEL_PRICES": {MODEL: {"input_per_million": 1.0, "output_per_million": 2.0}},
    }
    agent = _create(owner, _config(llm))

    run = _run(owner, agent)

    assert Decimal(run["cost_usd"]) == _cost(run, 1.0, 2.0) > 0


def test_without_any_price_an_unknown_model_costs_the_default(
    owner: Persona, llm: FakeOpenAIServer, celery_worker_app: object
) -> None:
    run = _run(owner, _create(owner, _config(llm)))

    assert Decimal(run["cost_usd"]) == _cost(run, 2.5, 10.0)


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        ({"input_per_million": -1, "output_per_million": 0}, "llm.prices.input_per_million"),
        ({"input_per_million": 0, "output_per_million": "free"}, "llm.prices.output_per_million"),
        ({"input_per_million": 0}, "llm.prices.output_per_million"),
        (
            {"input_per_million": 0, "output_per_million": 0, "currency": "EUR"},
            "llm.prices.currency",
        ),
        ([0, 0], "llm.prices"),
    ],
    ids=["negative", "string", "missing", "unknown-key", "not-object"],
)
def test_bad_prices_are_422_naming_the_field_and_change_nothing(
    owner: Persona, llm: FakeOpenAIServer, prices: Any, field: str
) -> None:
    config = _config(llm)
    config["llm"]["prices"] = prices
    with nothing_written(owner.tenant):
        response = owner.post(
            AGENTS, {"name": "bad", "blueprint": "support_agent", "config": config}
        )
    assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('{"llama3.2": {"input_per_million": 0', "LLM_MODEL_PRICES is not JSON"),
        ('{"llama3.2": {"input_per_million": -1, "output_per_million": 0}}', "LLM_MODEL_PRICES["),
        ('{"llama3.2": {"input_per_million": 0}}', "LLM_MODEL_PRICES['llama3.2'] must be"),
        ('["llama3.2"]', "LLM_MODEL_PRICES must map model names to prices"),
    ],
    ids=["not-json", "negative", "missing", "not-object"],
)
def test_a_bad_operator_table_fails_start_up_in_one_line_naming_it(value: str, reason: str) -> None:
    env = {**os.environ, "LLM_MODEL_PRICES": value}
    result = manage_check(env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"agentflow: configuration error: {reason}")


async def test_a_blueprint_agents_model_is_priced_the_same_way(
    llm: FakeOpenAIServer, settings: Any
) -> None:
    """The StepAgent blueprints' chain (`blueprint_llm`): own prices, else the operator's."""
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "LLM_MODEL_PRICES": {MODEL: {"input_per_million": 1.0, "output_per_million": 2.0}},
    }
    provider = {"kind": "openai", "model": MODEL, "base_url": llm.base_url, "max_retries": 0}
    own = {"input_per_million": 0.5, "output_per_million": 1.5}
    question = [ChatMessage("user", "Draft an article about password resets.")]

    for prices, expected in ((own, (0.5, 1.5)), (None, (1.0, 2.0))):
        given: dict[str, Any] = {"llm": {"providers": [provider]}}
        if prices is not None:
            given["llm"]["prices"] = prices
        chain = blueprint_llm("km-1", validate_agent_config("knowledge_manager_agent", given))
        assert isinstance(chain, GuardedProvider)
        try:
            reply = await chain.chat(question)
        finally:
            await chain.aclose()
        assert reply.usage == TokenUsage(PROMPT, COMPLETION)
        assert reply.cost_usd == pytest.approx(
            (PROMPT * expected[0] + COMPLETION * expected[1]) / 1e6
        )
