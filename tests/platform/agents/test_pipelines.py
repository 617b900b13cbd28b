"""Blueprint config validation, the pipeline cache, and full conversations on the database."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from agentflow import pipelines
from agentflow.kernel.config import ConfigError
from agentflow.kernel.intents import OfflineIntentClassifier
from agentflow.kernel.pipeline import AgentPipeline
from agentflow.knowledge import ingest_document
from agentflow.models import Agent, AgentSession, Thread
from agentflow.models import MemoryCase as MemoryCaseRow
from agentflow.pipelines import (
    BLUEPRINTS,
    AgentConfigError,
    clear_pipeline_cache,
    evict_pipeline,
    get_pipeline,
    validate_agent_config,
)
from tenants.context import tenant_scope
from tests.platform.agents import make_agent, make_tenant


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_pipeline_cache()


def unsaved_agent(config: dict[str, Any] | None = None, version: int = 1) -> Agent:
    """Building a pipeline reads no rows: an unsaved agent is enough for cache tests."""
    return Agent(
        id=uuid.uuid4(), tenant_id=1, name="bot", blueprint="support_agent",
        config=config or {}, version=version,
    )  # fmt: skip


def issues_of(config: Any, blueprint: str = "support_agent") -> dict[str, list[str]]:
    with pytest.raises(AgentConfigError) as caught:
        validate_agent_config(blueprint, config)
    return caught.value.by_field()


# ------------------------------------------------------------------- config validation


def test_the_default_config_is_the_blueprints_and_is_complete() -> None:
    normalised = validate_agent_config("support_agent", {})

    assert normalised == BLUEPRINTS["support_agent"].default_config
    names = [c["name"] for c in normalised["intent_categories"]]
    assert names == ["ACCOUNT_ACCESS", "BILLING", "TECHNICAL_ISSUE", "OUTAGE", "HUMAN_AGENT"]
    assert normalised["llm"]["providers"] == [
        {
            "kind": "offline",
            "model": "gpt-4o-mini",
            "base_url": None,
            "api_key": None,
            "timeout_seconds": 30.0,
            "max_retries": 2,
        }
    ]
    assert normalised == validate_agent_config("support_agent", normalised), "idempotent"


def test_a_partial_config_is_filled_with_defaults() -> None:
    normalised = validate_agent_config(
        "support_agent",
        {
            "intent_categories": [{"name": "REFUND", "examples": ["I want my money back"]}],
            "default_threshold": 0.75,
            "escalation_message": "A colleague will reply within the hour.",
        },
    )
    assert normalised["intent_categories"] == [
        {"name": "REFUND", "description": "", "examples": ["I want my money back"],
         "threshold": None}
    ]  # fmt: skip
    assert normalised["default_threshold"] == 0.75
    assert normalised["memory"]["episodic_limit"] == 100


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        ({"intent_categories": [{"name": "A", "threshold": 1.5}]},
         "intent_categories[0].threshold", "less than or equal to 1"),
        ({"default_treshold": 0.5}, "default_treshold", "unknown key (allowed: intent_categories"),
        ({"llm": {"providers": [{"kind": "openai", "modle": "x"}]}},
         "llm.providers[0].modle", "unknown key (allowed: kind, model"),
        ({"llm": {"providers": [{"kind": "anthropic"}]}}, "llm.providers[0].kind", "'openai'"),
        ({"llm": {"providers": []}}, "llm.providers", "at least 1"),
        ({"default_threshold": "high"}, "default_threshold", "valid number"),
        ({"escalation_message": ""}, "escalation_message", "at least 1 character"),
        ({"intent_categories": [{"name": "A"}, {"name": "A"}]}, "intent_categories[1].name",
         "duplicate name 'A'"),
        ({"intent_categories": [{"name": "OUT_OF_SCOPE"}]}, "intent_categories[0].name",
         "reserved"),
        ({"intent_categories": [{"name": "A", "examples": ["ok", "x" * 1001]}]},
         "intent_categories[0].examples[1]", "longer than 1000 characters"),
        ({"intent_categories": [{"name": f"C{i}"} for i in range(201)]}, "intent_categories",
         "at most 200 categories"),
        ({"intent_categories": [{"examples": ["hi"]}]}, "intent_categories[0].name", "required"),
        ({"memory": {"episodic_limit": 0}}, "memory.episodic_limit", "greater than 0"),
        ({"novelty_keep": 0}, "novelty_keep", "greater than 0"),
        ({"novelty_keep": 1.2}, "novelty_keep", "less than or equal to 1"),
        ({"budget": {"soft_usd": 5, "hard_usd": 1}}, "budget.hard_usd", "at least soft_usd"),
    ],
)  # fmt: skip
def test_errors_name_the_field_and_the_reason(
    config: dict[str, Any], field: str, reason: str
) -> None:
    found = issues_of(config)
    assert field in found, found
    assert any(reason in message for message in found[field]), found[field]


def test_the_error_is_a_value_error_naming_the_field_in_its_message() -> None:
    with pytest.raises(ValueError, match=r"intent_categories\[0\]\.threshold") as caught:
        validate_agent_config(
            "support_agent", {"intent_categories": [{"name": "A", "threshold": 2}]}
        )
    assert isinstance(caught.value, ConfigError)


def test_unknown_blueprint_and_non_object_config() -> None:
    (reason,) = issues_of({}, "nope")["blueprint"]
    assert reason == f"unknown blueprint 'nope'; available: {', '.join(BLUEPRINTS)}"
    assert reason.startswith("unknown blueprint 'nope'; available: support_agent, ")
    assert issues_of(["not", "an", "object"])["config"] == ["must be an object, not list"]


def test_api_keys_must_name_an_allowed_server_variable() -> None:
    secret = "sk-live-0123456789abcdef"
    found = issues_of({"llm": {"providers": [{"kind": "openai", "api_key": secret}]}})
    assert "must name an environment variable" in found["llm.providers[0].api_key"][0]
    assert secret not in json.dumps(found)
    # A tenant must not be able to read other server variables through its config.
    found = issues_of({"llm": {"providers": [{"kind": "openai", "api_key": "${DATABASE_URL}"}]}})
    assert "llm.providers[0].api_key" in found

    ok = validate_agent_config(
        "support_agent",
        {"llm": {"providers": [{"kind": "openai", "api_key": "${OPENAI_API_KEY}"}]}},
    )
    assert ok["llm"]["providers"][0]["api_key"] == "${OPENAI_API_KEY}"


def test_llm_endpoints_must_be_allowed_by_the_operator(settings: Any) -> None:
    config = {"llm": {"providers": [{"kind": "openai", "base_url": "http://10.0.0.5:8000/v1"}]}}
    assert "not an allowed LLM endpoint" in issues_of(config)["llm.providers[0].base_url"][0]

    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "LLM_ALLOWED_BASE_URLS": ["http://10.0.0.5:8000/v1"],
    }
    assert validate_agent_config("support_agent", config)["llm"]["providers"][0]["base_url"]


def test_blueprints_list_name_description_defaults_and_json_schema() -> None:
    blueprint = BLUEPRINTS["support_agent"]
    listed = json.loads(json.dumps(blueprint.to_dict()))

    assert listed["name"] == "support_agent"
    assert listed["description"]
    assert listed["config_schema"]["additionalProperties"] is False
    assert set(listed["config_schema"]["properties"]) == set(listed["default_config"])
    assert listed["default_config"] == validate_agent_config("support_agent", {})


# ------------------------------------------------------------------------------- cache


async def test_pipelines_are_cached_per_agent_and_version() -> None:
    agent = unsaved_agent()
    first = await get_pipeline(agent)

    assert isinstance(first, AgentPipeline)
    assert await get_pipeline(agent) is first
    agent.version = 2
    second = await get_pipeline(agent)
    assert second is not first
    assert len(pipelines._cache) == 1, "the old version is dropped"
    evict_pipeline(agent.id)
    assert await get_pipeline(agent) is not second


async def test_the_configured_novelty_keep_sets_the_out_of_scope_gate() -> None:
    # 20 examples per intent fit the gate; a lower keep raises its threshold (refuses more).
    categories = [
        {"name": name, "examples": [f"{verb} my {thing} {n}" for verb in verbs for n in range(10)]}
        for name, thing, verbs in (
            ("PASSWORD", "password", ("reset", "lost")),
            ("CARD", "card", ("block", "freeze")),
        )
    ]

    async def gate(**config: Any) -> float:
        pipeline = await get_pipeline(unsaved_agent({"intent_categories": categories, **config}))
        assert isinstance(pipeline, AgentPipeline)
        assert isinstance(pipeline.classifier, OfflineIntentClassifier)
        assert pipeline.classifier.novelty is not None
        return pipeline.classifier.novelty.threshold

    assert await gate(novelty_keep=0.5) > await gate()


def test_a_pipeline_is_never_shared_between_event_loops(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-user asyncio locks (any pipeline) and HTTP pools (network LLMs) bind to a loop."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_API_KEY_ENV_VARS": ["AGENTFLOW_TEST_KEY"]}
    monkeypatch.setenv("AGENTFLOW_TEST_KEY", "sk-test")  # never used: no message is sent
    llm = {"providers": [{"kind": "openai", "api_key": "${AGENTFLOW_TEST_KEY}"}]}
    networked, offline = unsaved_agent({"llm": llm}), unsaved_agent()

    first = [asyncio.run(get_pipeline(agent)) for agent in (networked, offline)]
    second = [asyncio.run(get_pipeline(agent)) for agent in (networked, offline)]
    assert second[0] is not first[0], "its HTTP clients belonged to the first loop"
    assert second[1] is not first[1], "its per-user locks belonged to the first loop"

    async def twice(agent: Agent) -> bool:
        return await get_pipeline(agent) is await get_pipeline(agent)

    assert asyncio.run(twice(offline)), "on one loop the pipeline is built once and reused"


async def test_concurrent_first_calls_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    real_build = pipelines.build_pipeline

    async def counting_build(agent: Agent) -> AgentPipeline:
        builds.append(agent.id)
        return await real_build(agent)

    monkeypatch.setattr(pipelines, "build_pipeline", counting_build)
    agent = unsaved_agent()
    results = await asyncio.gather(*(get_pipeline(agent) for _ in range(4)))

    assert len(builds) == 1
    assert all(result is results[0] for result in results)


async def test_an_invalid_stored_config_fails_the_build_and_is_not_cached() -> None:
    agent = unsaved_agent({"default_threshold": 3})
    with pytest.raises(AgentConfigError, match="default_threshold"):
        await get_pipeline(agent)
    assert len(pipelines._cache) == 0


async def test_the_config_cannot_read_the_servers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "s3cret")
    message = "Hold on ${AGENTFLOW_TEST_SECRET} $$ ${MISSING:-x}"
    pipeline = await get_pipeline(unsaved_agent({"escalation_message": message}))
    assert pipeline.config.prompts["escalation_message"] == message


# ------------------------------------------------------------- conversations on the DB


def assert_not_degraded(*replies: Any) -> None:
    for reply in replies:
        assert "degraded" not in reply.metadata, reply.metadata["degraded"]


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_keeps_its_session_and_threads_in_the_database() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        agent_pipeline = await get_pipeline(agent)
        say = agent_pipeline.process_message
        first = await say("cust-1", "I can't log in, the password reset email never arrives")
        second = await say("cust-1", "The login page still rejects my password")
        billing = await say("cust-1", "Actually, different question: I was charged twice")
        # Another worker process: a fresh pipeline, the same database.
        evict_pipeline(agent.id)
        thanks = await (await get_pipeline(agent)).process_message(
            "cust-1", "Thanks, that fixed the login!"
        )

        session = await AgentSession.objects.aget(agent=agent, user_id="cust-1")
        threads = {t.id: t async for t in Thread.objects.filter(session=session)}
        login_cases = [c async for c in MemoryCaseRow.objects.filter(thread_id=first.thread_id)]

    assert_not_degraded(first, second, billing, thanks)
    assert first.metadata["new_session"] is True
    assert second.metadata["new_session"] is False
    assert thanks.metadata["new_session"] is False
    assert {r.session_id for r in (first, second, billing, thanks)} == {str(session.id)}
    assert second.thread_id == first.thread_id
    assert second.transition in ("continuation", "follow_up")
    assert billing.transition == "new_topic"
    assert billing.thread_id != first.thread_id
    assert thanks.transition == "resolution"
    assert thanks.thread_id == first.thread_id, "the login thread, though billing was active"

    assert session.message_count == 4
    assert session.active_thread_id == billing.thread_id
    login, other = threads[first.thread_id], threads[billing.thread_id]
    assert login.status == "resolved"
    assert login.resolution == "Thanks, that fixed the login!"
    assert login.message_count == 3
    assert other.status == "active"
    assert set(login.state["keywords"]) >= {"login", "password"}
    assert [c.resolved for c in login_cases] == [True, True]


@pytest.mark.django_db(transaction=True)
async def test_answers_come_from_the_agents_own_knowledge_base() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        with_kb, without_kb = await make_agent("with-kb"), await make_agent("without-kb")
        document = await sync_to_async(ingest_document)(
            agent=with_kb,
            title="Resetting your password",
            content_type="text/markdown",
            text="# Password reset\n\nTo reset your password, open the sign-in page, click "
            "Forgot password and follow the link we email you within five minutes.",
        )
        answered = await (await get_pipeline(with_kb)).process_message(
            "cust-1", "How do I reset my password?"
        )
        unanswered = await (await get_pipeline(without_kb)).process_message(
            "cust-1", "How do I reset my password?"
        )

    assert_not_degraded(answered, unanswered)
    assert answered.knowledge_ids == [f"{document.id}#0"]
    assert "Forgot password" in (answered.proposed_answer or answered.content)
    assert unanswered.knowledge_ids == []
