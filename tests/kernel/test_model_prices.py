"""Prices for models the built-in table does not know (issue 20): an agent's ``llm.prices``
over a shared table over the defaults, in what a call records and in the preflight.

The agents talk to a real local OpenAI-compatible server (`FakeOpenAIServer`) through the
real `OpenAIProvider`, as an agent on Ollama or vLLM would.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentflow.cli import main
from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError, ConfigLoader
from agentflow.kernel.costs import ModelPrice, PriceTable
from agentflow.kernel.llm.base import TokenUsage
from agentflow.kernel.llm_chain import agent_price_table
from agentflow.kernel.planning.preflight import CostProfile, preflight
from agentflow.kernel.planning.support import SUPPORT_PLANNER
from agentflow.kernel.planning.validation import load_plan
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, chat_completion
from tests.kernel.pipeline_fakes import CATEGORIES

MILLION = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
LOCAL_MODEL = "llama3.2"
PROMPT_TOKENS, COMPLETION_TOKENS = 300, 40


def _answer(request: RecordedRequest) -> Any:
    # A local server answers under its own model name, unknown to the built-in table.
    return chat_completion(
        "Open Settings, then Security, then Reset password.",
        prompt_tokens=PROMPT_TOKENS,
        completion_tokens=COMPLETION_TOKENS,
        model=LOCAL_MODEL,
    )


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=_answer) as srv:
        yield srv


def _config(server: FakeOpenAIServer, prices: Mapping[str, float] | None) -> dict[str, Any]:
    llm: dict[str, Any] = {
        "providers": [
            {"kind": "openai", "model": LOCAL_MODEL, "base_url": server.base_url, "max_retries": 0}
        ]
    }
    if prices is not None:
        llm["prices"] = prices
    return {"llm": llm}


async def _ask(builder: AgentFrameworkBuilder) -> Any:
    agent = await builder.with_intent_categories(CATEGORIES).build()
    try:
        return await agent.process_message("u1", "How do I reset my password?")
    finally:
        await agent.aclose()


def _priced(usage: TokenUsage, input_per_million: float, output_per_million: float) -> float:
    """What ``usage`` costs at those prices, having checked it is n answers of the server
    (each answer reports the same usage; a discarded classifier answer is not counted)."""
    calls = usage.prompt_tokens // PROMPT_TOKENS
    assert calls >= 1
    assert usage == TokenUsage(PROMPT_TOKENS * calls, COMPLETION_TOKENS * calls)
    return (PROMPT_TOKENS * input_per_million + COMPLETION_TOKENS * output_per_million) * (
        calls / 1_000_000
    )


# --------------------------------------------------------------------------- the table


def test_an_override_prices_every_model_but_the_offline_ones() -> None:
    base = PriceTable({"llama3.2": (1.0, 1.0)})
    own = base.overriding(ModelPrice(0.5, 1.5))
    for model in ("llama3.2", "gpt-4o", "qwen2.5:7b"):
        assert own.cost(model, MILLION) == pytest.approx(2.0)
        assert own.known(model)
    assert own.cost("offline-extractive", MILLION) == 0.0
    assert own.cost("template", MILLION) == 0.0
    # The shared table is left as it was.
    assert base.cost("llama3.2", MILLION) == pytest.approx(2.0)
    assert base.cost("gpt-4o", MILLION) == pytest.approx(12.5)


def test_an_ollama_latest_tag_costs_what_the_model_costs() -> None:
    table = PriceTable({"llama3.2": (1.0, 1.0)})
    assert table.cost("llama3.2:latest", MILLION) == pytest.approx(2.0)
    assert not table.known("llama3.2:3b")  # another size is another model


def test_an_overridden_model_is_not_reported_as_unknown() -> None:
    with capture_logs() as logs:
        PriceTable().overriding(ModelPrice(0.0, 0.0)).cost("llama3.2", MILLION)
    assert [e for e in logs if e["event"] == "llm.price_unknown"] == []


def test_the_agents_prices_win_over_the_shared_table_which_wins_over_the_defaults() -> None:
    shared = PriceTable({LOCAL_MODEL: (0.1, 0.2), "gpt-4o": (1.0, 1.0)})
    plain = ConfigLoader.load({"llm": {"providers": [{"kind": "openai", "model": LOCAL_MODEL}]}})
    priced = ConfigLoader.load(
        {"llm": {"prices": {"input_per_million": 3, "output_per_million": 4}}}
    )

    assert agent_price_table(plain, None) is None  # nothing to change: the defaults
    assert agent_price_table(plain, shared) is shared
    assert shared.cost(LOCAL_MODEL, MILLION) == pytest.approx(0.3)
    assert shared.cost("gpt-4o-mini", MILLION) == pytest.approx(0.75)  # a default price
    for table in (agent_price_table(priced, shared), agent_price_table(priced, None)):
        assert table is not None
        assert table.cost(LOCAL_MODEL, MILLION) == pytest.approx(7.0)


# -------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("prices", "field", "reason"),
    [
        (
            {"input_per_million": -1, "output_per_million": 0},
            "input_per_million",
            "greater than or equal to 0",
        ),
        ({"input_per_million": 0, "output_per_million": "0"}, "output_per_million", "number"),
        ({"input_per_million": True, "output_per_million": 0}, "input_per_million", "number"),
        ({"input_per_million": 0}, "output_per_million", "required"),
        ({"input_per_million": 0, "output_per_million": 0, "per": 1}, "per", "unknown key"),
        ({"input_per_million": 0, "output_per_million": 1e400}, "output_per_million", "finite"),
    ],
)
def test_bad_prices_name_the_field(prices: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load({"llm": {"prices": prices}})
    message = str(caught.value)
    assert f"llm.prices.{field}" in message
    assert reason in message


# ------------------------------------------------------------------------------- calls


async def test_an_agent_priced_at_zero_records_its_tokens_at_no_cost(
    server: FakeOpenAIServer,
) -> None:
    zero = {"input_per_million": 0, "output_per_million": 0}
    reply = await _ask(AgentFrameworkBuilder().with_config(_config(server, zero)))

    assert server.requests
    assert reply.usage.total_tokens > 0
    assert reply.cost_usd == 0.0


async def test_an_agents_price_is_tokens_times_price_whatever_the_shared_table_says(
    server: FakeOpenAIServer,
) -> None:
    own = {"input_per_million": 0.2, "output_per_million": 0.6}
    shared = PriceTable({LOCAL_MODEL: (100.0, 100.0)})
    reply = await _ask(
        AgentFrameworkBuilder().with_config(_config(server, own)).with_costs(price_table=shared)
    )

    assert reply.cost_usd == pytest.approx(_priced(reply.usage, 0.2, 0.6))


async def test_without_its_own_price_an_agent_is_priced_by_the_shared_table(
    server: FakeOpenAIServer,
) -> None:
    shared = PriceTable({LOCAL_MODEL: (1.0, 2.0)})
    reply = await _ask(
        AgentFrameworkBuilder().with_config(_config(server, None)).with_costs(price_table=shared)
    )

    assert reply.cost_usd == pytest.approx(_priced(reply.usage, 1.0, 2.0))


async def test_with_no_price_anywhere_an_unknown_model_costs_the_default(
    server: FakeOpenAIServer,
) -> None:
    reply = await _ask(AgentFrameworkBuilder().with_config(_config(server, None)))

    assert reply.cost_usd == pytest.approx(_priced(reply.usage, 2.5, 10.0))


# --------------------------------------------------------------------------- preflight


def test_the_preflight_prices_the_plan_with_the_agents_table() -> None:
    plan = load_plan(SUPPORT_PLANNER)
    message = "How do I reset my password?"

    def estimate(table: PriceTable) -> Any:
        profile = CostProfile(model=LOCAL_MODEL, price_table=table, categories=CATEGORIES)
        return preflight(plan, message, profile)

    free = estimate(PriceTable().overriding(ModelPrice(0.0, 0.0)))
    priced = estimate(PriceTable().overriding(ModelPrice(1.0, 2.0)))

    assert free.tokens == priced.tokens > 0  # the tokens are counted either way
    assert free.usd == free.max_usd == 0.0
    steps = [s for s in priced.steps if s.model == LOCAL_MODEL]
    assert steps
    expected = sum(s.prompt_tokens * 1.0 + s.completion_cap * 2.0 for s in steps) / 1_000_000
    assert priced.max_usd == pytest.approx(expected)


# --------------------------------------------------------------------------------- CLI


def _cli_preflight(tmp_path: Path, prices: str) -> tuple[int, str]:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"llm: {{providers: [{{kind: openai, model: {LOCAL_MODEL}}}]{prices}}}\n"
        "intents: {categories: [{name: BILLING, examples: ['my invoice is wrong']}]}\n"
        "budget: {hard_usd: 0.000001}\n"
    )
    out = io.StringIO()
    status = main(["preflight", str(config), "--message", "I was charged twice"], stdout=out)
    return status, out.getvalue()


def test_the_cli_preflight_prices_with_the_configs_prices(tmp_path: Path) -> None:
    status, out = _cli_preflight(
        tmp_path, ", prices: {input_per_million: 0, output_per_million: 0}"
    )
    assert status == 0
    estimate = json.loads(out)
    assert estimate["tokens"] > 0
    assert estimate["max_usd"] == 0
    assert estimate["decision"] == "ok"  # the tiny hard budget refuses at the default price
    status, out = _cli_preflight(tmp_path, "")
    assert json.loads(out)["decision"] == "refuse"


def test_the_cli_preflight_refuses_bad_prices_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = _cli_preflight(tmp_path, ", prices: {input_per_million: -1, output_per_million: 0}")
    assert status == 2
    assert "llm.prices: input_per_million: " in capsys.readouterr().err
