"""Prices, cost tracking per scope, budgets refused before the call, preflight estimates."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
from structlog.testing import capture_logs

from agentflow.kernel.costs import (
    DEFAULT_COMPLETION_TOKENS,
    Budget,
    BudgetedProvider,
    BudgetGuard,
    CostTracker,
    ModelPrice,
    PriceTable,
    estimate_cost,
    estimate_tokens,
    estimate_usage,
    scope_keys,
)
from agentflow.kernel.llm.base import BudgetExceeded, ChatMessage, TokenUsage
from agentflow.kernel.llm.openai_provider import OpenAIProvider, RetryPolicy
from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion

USAGE = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)


# --------------------------------------------------------------------------- prices


def test_known_models_are_priced_per_million_input_and_output_tokens() -> None:
    table = PriceTable()
    assert table.cost("gpt-4o-mini", USAGE) == pytest.approx(0.15 + 0.60)
    assert table.cost("gpt-4o", TokenUsage(1000, 500)) == pytest.approx(
        (1000 * 2.50 + 500 * 10.0) / 1e6
    )


def test_dated_snapshots_cost_what_their_family_costs() -> None:
    table = PriceTable()
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")
    assert table.price("gpt-4-0613") == table.price("gpt-4")
    assert table.known("gpt-4o-2024-08-06")


def test_offline_and_template_answers_are_free() -> None:
    table = PriceTable()
    assert table.cost("offline-extractive", USAGE) == 0.0
    assert table.cost("offline-hash-384", USAGE) == 0.0
    assert table.cost("template", USAGE) == 0.0


def test_unknown_models_use_the_configurable_default_and_warn_once() -> None:
    table = PriceTable(default=(1.0, 2.0))
    with capture_logs() as logs:
        first = table.cost("llama3.1:8b", USAGE)
        second = table.cost("llama3.1:8b", USAGE)
    assert first == second == pytest.approx(3.0)
    warnings = [e for e in logs if e["event"] == "llm.price_unknown"]
    assert len(warnings) == 1
    assert warnings[0]["model"] == "llama3.1:8b"


def test_prices_can_be_overridden_and_negative_prices_are_refused() -> None:
    table = PriceTable({"gpt-4o-mini": (1.0, 1.0), "my-vllm-model": ModelPrice(0.0, 0.0)})
    assert table.cost("gpt-4o-mini", USAGE) == pytest.approx(2.0)
    assert table.cost("my-vllm-model", USAGE) == 0.0
    with pytest.raises(ValueError, match="negative"):
        ModelPrice(-1.0, 0.0)


# ------------------------------------------------------------------------ estimates


def test_token_estimate_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("a" * 401) == 101


def test_usage_estimate_counts_messages_tools_and_the_completion_cap() -> None:
    messages = [ChatMessage("system", "x" * 40), ChatMessage("user", "y" * 80)]
    usage = estimate_usage(messages, 100)
    assert usage.prompt_tokens == 10 + 20 + 2 * 4  # text + per-message markup
    assert usage.completion_tokens == 100
    assert estimate_usage(messages).completion_tokens == DEFAULT_COMPLETION_TOKENS


def test_cost_estimate_prices_the_estimated_usage() -> None:
    messages = [ChatMessage("user", "z" * 4000)]
    expected = PriceTable().cost("gpt-4o", estimate_usage(messages, 200))
    assert estimate_cost("gpt-4o", messages, 200) == pytest.approx(expected)
    assert estimate_cost("offline-extractive", messages, 200) == 0.0
    plan = [messages, messages]  # a plan's preflight is the sum over its steps
    assert sum(estimate_cost("gpt-4o", m, 200) for m in plan) == pytest.approx(2 * expected)


# ------------------------------------------------------------------------- tracking


def test_scope_keys_cover_run_agent_tenant_and_day() -> None:
    keys = scope_keys(run_id="r1", agent_id="a1", tenant_id="t1", day=date(2026, 1, 2))
    assert keys == [
        "total",
        "day:2026-01-02",
        "tenant:t1",
        "tenant:t1:day:2026-01-02",
        "agent:a1",
        "agent:a1:day:2026-01-02",
        "run:r1",
    ]


def test_tracker_sums_tokens_and_dollars_per_scope() -> None:
    tracker = CostTracker()
    at = datetime(2026, 3, 4, 12, tzinfo=UTC)
    tracker.record(
        model="gpt-4o", usage=TokenUsage(10, 5), cost_usd=0.5, run_id="r1", tenant_id="t1", at=at
    )
    tracker.record(
        model="gpt-4o", usage=TokenUsage(1, 1), cost_usd=0.25, run_id="r2", tenant_id="t1", at=at
    )
    assert tracker.spent("tenant:t1") == pytest.approx(0.75)
    assert tracker.spent("tenant:t1:day:2026-03-04") == pytest.approx(0.75)
    assert tracker.spent("run:r1") == pytest.approx(0.5)
    assert tracker.tokens("tenant:t1") == TokenUsage(11, 6)
    assert tracker.totals("tenant:t1").calls == 2
    assert tracker.spent("tenant:other") == 0.0
    assert len(tracker.records()) == 2
    assert "day:2026-03-04" in tracker.snapshot()


def test_tracker_is_exact_under_concurrent_threads() -> None:
    tracker = CostTracker(keep_records=10)

    def work() -> None:
        for _ in range(500):
            tracker.record(model="m", usage=TokenUsage(1, 1), cost_usd=0.001, tenant_id="t")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals = tracker.totals("tenant:t")
    assert totals.calls == 4000
    assert totals.usage == TokenUsage(4000, 4000)
    assert totals.cost_usd == pytest.approx(4.0)
    assert len(tracker.records()) == 10  # bounded history


# -------------------------------------------------------------------------- budgets


def test_budget_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="soft budget"):
        Budget(soft_usd=2.0, hard_usd=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        Budget(hard_usd=-1.0)


def _spent(tracker: CostTracker, usd: float, tenant: str = "t1") -> None:
    tracker.record(model="gpt-4o", usage=TokenUsage(1, 1), cost_usd=usd, tenant_id=tenant)


def test_hard_budget_refuses_when_spent_plus_estimate_passes_it() -> None:
    tracker = CostTracker()
    guard = BudgetGuard(tracker, {"tenant:t1": Budget(hard_usd=1.0)})
    _spent(tracker, 0.9)
    assert guard.check("tenant:t1", 0.1) is False  # exactly at the limit is allowed
    with pytest.raises(BudgetExceeded) as info:
        guard.check("tenant:t1", 0.2)
    assert info.value.scope == "tenant:t1"
    assert info.value.limit_usd == 1.0
    assert info.value.spent_usd == pytest.approx(0.9)
    assert info.value.estimate_usd == pytest.approx(0.2)
    assert guard.check("tenant:other", 5.0) is False  # scopes without budget are unlimited


def test_soft_budget_returns_a_flag_and_logs_a_warning() -> None:
    tracker = CostTracker()
    guard = BudgetGuard(tracker)
    guard.set_budget("agent:a1", Budget(soft_usd=0.5, hard_usd=10.0))
    tracker.record(model="m", usage=TokenUsage(1, 1), cost_usd=0.45, agent_id="a1")
    with capture_logs() as logs:
        assert guard.check("agent:a1", 0.01) is False
        assert guard.check("agent:a1", 0.10) is True
    [warning] = [e for e in logs if e["event"] == "budget.soft_exceeded"]
    assert warning["scope"] == "agent:a1"
    assert warning["log_level"] == "warning"


def test_reservations_stop_concurrent_calls_slipping_under_one_limit() -> None:
    guard = BudgetGuard(CostTracker(), {"tenant:t1": Budget(hard_usd=1.0)})
    with guard.reserve(["tenant:t1"], 0.6), pytest.raises(BudgetExceeded):
        guard.check("tenant:t1", 0.6)
    assert guard.check("tenant:t1", 0.6) is False  # released once the first call settled


def test_check_all_checks_every_hard_limit_before_reporting_soft_ones() -> None:
    tracker = CostTracker()
    guard = BudgetGuard(
        tracker, {"tenant:t1": Budget(soft_usd=0.0), "agent:a1": Budget(hard_usd=0.01)}
    )
    with pytest.raises(BudgetExceeded) as info:
        guard.check_all(["tenant:t1", "agent:a1"], 0.02)
    assert info.value.scope == "agent:a1"
    assert guard.check_all(["tenant:t1", "agent:a1"], 0.001) is True


# ---------------------------------------------------- budgets around a real provider


@pytest.fixture
async def server_and_provider() -> AsyncIterator[tuple[FakeOpenAIServer, OpenAIProvider]]:
    with FakeOpenAIServer() as server:
        provider = OpenAIProvider(
            "gpt-4o",
            api_key="test-key",
            base_url=server.base_url,
            retry_policy=RetryPolicy(initial_wait=0.001, max_wait=0.002, jitter=0.0),
        )
        async with provider:
            yield server, provider


async def test_hard_budget_refuses_before_any_request_reaches_the_server(
    server_and_provider: tuple[FakeOpenAIServer, OpenAIProvider],
) -> None:
    server, provider = server_and_provider
    tracker = CostTracker()
    guard = BudgetGuard(tracker, {"tenant:t1": Budget(hard_usd=0.001)})
    budgeted = BudgetedProvider(provider, guard)
    with pytest.raises(BudgetExceeded):
        await budgeted.chat(
            [ChatMessage("user", "Explain my invoice " * 50)],
            max_tokens=500,
            metadata={"tenant_id": "t1"},
        )
    assert server.requests == []
    assert tracker.spent("tenant:t1") == 0.0


async def test_budgeted_calls_are_recorded_and_soft_warnings_flagged(
    server_and_provider: tuple[FakeOpenAIServer, OpenAIProvider],
) -> None:
    server, provider = server_and_provider
    server.enqueue(
        chat_completion("first", prompt_tokens=1000, completion_tokens=1000, model="gpt-4o")
    )
    server.enqueue(
        chat_completion("second", prompt_tokens=1000, completion_tokens=1000, model="gpt-4o")
    )
    tracker = CostTracker()
    guard = BudgetGuard(tracker, {"tenant:t1": Budget(soft_usd=0.01, hard_usd=1.0)})
    budgeted = BudgetedProvider(provider, guard)
    meta = {"tenant_id": "t1", "agent_id": "a1", "run_id": "r1"}

    first = await budgeted.chat([ChatMessage("user", "hi")], max_tokens=10, metadata=meta)
    cost = (1000 * 2.50 + 1000 * 10.0) / 1e6
    assert first.cost_usd == pytest.approx(cost)
    assert "budget_warning" not in first.metadata
    assert tracker.spent("tenant:t1") == pytest.approx(cost)
    assert tracker.spent("run:r1") == pytest.approx(cost)
    assert tracker.tokens("agent:a1") == TokenUsage(1000, 1000)

    second = await budgeted.chat([ChatMessage("user", "hi")], max_tokens=10, metadata=meta)
    assert second.metadata["budget_warning"] is True  # 0.0125 already spent > soft 0.01
    assert len(server.requests) == 2
