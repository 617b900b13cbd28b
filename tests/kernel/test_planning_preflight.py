"""Cost preflight: per-step estimates from the prompts each LLM step sends, budgets, accuracy."""

from __future__ import annotations

import pytest

from agentflow.kernel.costs import Budget, PriceTable, estimate_usage
from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.llm.base import TokenUsage
from agentflow.kernel.planning.model import PlanState
from agentflow.kernel.planning.preflight import (
    CostProfile,
    PreflightLedger,
    PreflightRefused,
    calibrated_scale,
    enforce,
    preflight,
)
from agentflow.kernel.planning.validation import load_plan
from tests.kernel.pipeline_fakes import CATEGORIES, KNOWLEDGE, ScriptedLLM
from tests.kernel.planning_helpers import FIXTURES, ScriptedExecutor

PROFILE = CostProfile(model="gpt-4o-mini", categories=CATEGORIES, knowledge=KNOWLEDGE)
MESSAGE = "My login is broken since this morning, can you help?"


def support():  # type: ignore[no-untyped-def]
    return load_plan((FIXTURES / "support.yaml").read_text())


def test_estimate_per_step_uses_the_prompts_the_steps_send() -> None:
    estimate = preflight(support(), MESSAGE, PROFILE)
    by_node = {s.node: s for s in estimate.steps}
    # The costliest path: classify → knowledge_search → generate_response → send_response.
    assert list(by_node) == ["classify", "knowledge_search", "generate_response", "send_response"]
    classify = by_node["classify"]
    assert classify.completion_cap == 60
    assert classify.prompt_tokens > 100  # the classifier's system prompt lists the categories
    answer = by_node["generate_response"]
    # system prompt + the knowledge articles (two in the fixture) + the message
    bare = preflight(support(), MESSAGE, CostProfile(model="gpt-4o-mini", knowledge_top_k=0))
    assert answer.prompt_tokens > bare.steps[2].prompt_tokens + 40
    assert answer.completion_cap == 512
    assert by_node["knowledge_search"].usd == 0.0
    assert answer.max_usd == pytest.approx(
        PriceTable().cost("gpt-4o-mini", TokenUsage(answer.prompt_tokens, 512))
    )
    assert estimate.usd < estimate.max_usd
    assert estimate.decision == "ok"


def test_offline_plans_cost_nothing() -> None:
    estimate = preflight(support(), MESSAGE, CostProfile(model="offline", categories=CATEGORIES))
    assert estimate.tokens == 0
    assert estimate.max_usd == 0.0


def test_soft_budget_warns_and_hard_budget_refuses_before_any_call() -> None:
    plan = support()
    full = preflight(plan, MESSAGE, PROFILE).max_usd
    warn = preflight(plan, MESSAGE, PROFILE, budget=Budget(soft_usd=full / 2, hard_usd=full * 2))
    assert warn.decision == "warn"
    assert enforce(warn) is warn
    refused = preflight(plan, MESSAGE, PROFILE, budget=Budget(hard_usd=full / 2))
    assert refused.decision == "refuse"
    with pytest.raises(PreflightRefused):
        enforce(refused, "agent:a1")
    spent = preflight(
        plan, MESSAGE, PROFILE, budget=Budget(hard_usd=full * 2), spent_usd=full * 1.5
    )
    assert spent.decision == "refuse"


async def test_llm_planner_estimate_includes_the_planning_call_and_max_steps() -> None:
    plan = load_plan({"type": "llm", "actions": ["classify", "generate_response"], "max_steps": 2})
    estimate = preflight(plan, MESSAGE, PROFILE)
    assert [s.node for s in estimate.steps] == ["plan", "step_1", "step_2"]
    prompt = estimate_usage(plan.prompt(PlanState(message=MESSAGE)), plan.max_tokens)
    assert estimate.steps[0].prompt_tokens == prompt.prompt_tokens
    assert estimate.steps[1].action == "step:generate_response"  # the costliest allowed action


async def test_estimate_against_what_the_classifier_actually_sends() -> None:
    """The classify estimate counts the exact prompt the LLM classifier sends."""
    from agentflow.kernel.intents import LLMIntentClassifier, OfflineIntentClassifier

    llm = ScriptedLLM()
    offline = OfflineIntentClassifier(CATEGORIES)
    classifier = LLMIntentClassifier(llm, CATEGORIES, fallback=offline)
    await classifier.classify(MESSAGE)
    sent = llm.json_calls[0]["messages"]
    actual = estimate_usage(sent, 60).prompt_tokens
    estimate = preflight(support(), MESSAGE, PROFILE).steps[0]
    assert estimate.prompt_tokens == actual


def test_ledger_reports_p50_and_p95_error_per_agent() -> None:
    ledger = PreflightLedger()
    for estimated, actual in [(100, 100), (110, 100), (95, 100), (300, 100)]:
        ledger.record("support", estimated, actual)
    report = ledger.report()["support"]
    assert report["runs"] == 4
    assert report["p50_error"] == pytest.approx(0.075)
    assert report["p95_error"] == pytest.approx(2.0)


async def test_a_refused_plan_never_reaches_the_executor() -> None:
    plan = support()
    executor = ScriptedExecutor()
    estimate = preflight(plan, MESSAGE, PROFILE, budget=Budget(hard_usd=1e-9))

    async def guarded_run() -> None:
        enforce(estimate)
        await plan.run(PlanState(message=MESSAGE), executor)

    with pytest.raises(PreflightRefused):
        await guarded_run()
    assert executor.calls == []


def test_categories_change_the_classifier_estimate() -> None:
    more = [*CATEGORIES, IntentCategory("SHIPPING", "Deliveries", ["where is my parcel"] * 3)]
    small = preflight(support(), MESSAGE, PROFILE).steps[0].prompt_tokens
    large = preflight(support(), MESSAGE, CostProfile(model="gpt-4o-mini", categories=more))
    assert large.steps[0].prompt_tokens > small


async def test_hard_budget_refuses_before_any_request_reaches_a_local_openai_server() -> None:
    from agentflow.kernel.llm.openai_provider import OpenAIProvider
    from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion

    plan = load_plan({"type": "llm", "actions": ["classify", "generate_response"], "max_steps": 2})
    profile = CostProfile(model="gpt-4o-mini", categories=CATEGORIES)
    with FakeOpenAIServer() as server:
        async with OpenAIProvider(
            "gpt-4o-mini", api_key="test-key", base_url=server.base_url, timeout_seconds=2
        ) as llm:

            async def guarded(budget: Budget) -> str:
                enforce(preflight(plan, MESSAGE, profile, budget=budget))
                result = await plan.run(PlanState(message=MESSAGE), llm, ScriptedExecutor())
                return result.status

            with pytest.raises(PreflightRefused):
                await guarded(Budget(hard_usd=1e-6))
            assert server.requests == []
            server.enqueue(chat_completion('{"steps": [{"action": "classify"}]}'))
            assert await guarded(Budget(hard_usd=1.0)) == "completed"
            assert len(server.requests) == 1
        assert server.errors == []


def test_a_token_scale_scales_prompts_and_expected_answers_but_not_the_cap() -> None:
    plain = preflight(support(), MESSAGE, PROFILE)
    scaled_profile = CostProfile(
        model="gpt-4o-mini", categories=CATEGORIES, knowledge=KNOWLEDGE, token_scale=1.5
    )
    scaled = preflight(support(), MESSAGE, scaled_profile)
    for before, after in zip(plain.steps, scaled.steps, strict=True):
        assert after.prompt_tokens == round(before.prompt_tokens * 1.5)
        assert after.completion_tokens == round(before.completion_tokens * 1.5)
        assert after.completion_cap == before.completion_cap
    assert scaled.token_scale == 1.5
    assert abs(scaled.raw_tokens - plain.tokens) <= 2  # rounding of each step
    assert "scaled by 1.500" in scaled.method
    answer = scaled.steps[2]
    assert answer.max_usd == pytest.approx(
        PriceTable().cost("gpt-4o-mini", TokenUsage(answer.prompt_tokens, 512))
    )


def test_the_scale_is_the_median_ratio_once_enough_runs_spent_tokens() -> None:
    assert calibrated_scale([(1000, 1200)] * 19) == 1.0  # too few runs to tell
    runs = [(1000, 1200)] * 15 + [(1000, 900)] * 4 + [(0, 500), (800, 0)] + [(1000, 5000)]
    assert calibrated_scale(runs) == 1.2  # an outlier moves a median little
    assert calibrated_scale([(100, 10_000)] * 30) == 4.0  # clamped
    assert calibrated_scale([(1000, 1)] * 30) == 0.25
