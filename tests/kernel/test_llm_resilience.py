"""Circuit breaker states and the failover chain down to the template answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.kernel.llm.base import (
    BudgetExceeded,
    ChatMessage,
    CircuitOpen,
    EmbeddingResponse,
    LLMProvider,
    LLMResponse,
    ProviderUnavailable,
)
from agentflow.kernel.llm.offline import OfflineProvider
from agentflow.kernel.llm.openai_provider import OpenAIProvider, RetryPolicy
from agentflow.kernel.llm.resilience import (
    DEFAULT_TEMPLATE_ANSWER,
    CircuitBreaker,
    FailoverProvider,
)
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    chat_completion,
    embeddings,
    error,
    slow,
)

HELLO = [ChatMessage("user", "Hello!")]
FAST = RetryPolicy(initial_wait=0.001, max_wait=0.002, jitter=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider stand-in that raises or answers as told, counting its calls."""

    def __init__(self, name: str, outcome: BaseException | str, delay: float = 0.0) -> None:
        self.name = name
        self.outcome = outcome
        self.delay = delay
        self.calls: list[dict[str, Any]] = []

    async def chat(self, messages: list[ChatMessage], **kwargs: Any) -> LLMResponse:
        self.calls.append(kwargs)
        await asyncio.sleep(self.delay)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return LLMResponse(content=self.outcome, model="m", provider=self.name)

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        self.calls.append({"model": model})
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return EmbeddingResponse(vectors=[[1.0]] * len(texts), model="m", provider=self.name)


# --------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match=r"retry in 30\.0s"):
        breaker.before_call()


def test_breaker_defaults_are_five_failures_and_thirty_seconds() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.cooldown_seconds) == (5, 30.0)


def test_half_open_admits_one_probe_and_closes_on_its_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=30, clock=clock)
    breaker.record_failure()
    clock.now = 29.9
    assert breaker.state == "open"
    clock.now = 30.0
    assert breaker.state == "half_open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # everyone else waits for the probe's verdict
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_a_failed_probe_starts_a_new_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now = 10
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 19.9
    assert breaker.state == "open"
    clock.now = 20
    assert breaker.state == "half_open"


def test_a_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    breaker.before_call()
    breaker.release_probe()  # e.g. the probing task was cancelled
    breaker.before_call()


async def test_a_cancelled_probe_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=1, clock=clock)
    breaker.record_failure()
    clock.now = 1
    with FakeOpenAIServer() as server:
        server.enqueue(slow(2.0), chat_completion("second probe"))
        async with OpenAIProvider(
            "gpt-4o-mini", api_key="k", base_url=server.base_url, breaker=breaker
        ) as provider:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await provider.chat(HELLO)  # the probe, cancelled by our timeout
            response = await provider.chat(HELLO)
    assert response.content == "second probe"
    assert breaker.state == "closed"


def test_breaker_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown"):
        CircuitBreaker(cooldown_seconds=-1)


# ----------------------------------------------------------------------------- failover


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        yield first, second


def openai_on(server: FakeOpenAIServer, name: str, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(
        "gpt-4o-mini",
        api_key="k",
        base_url=server.base_url,
        name=name,
        max_retries=1,
        retry_policy=FAST,
        **kwargs,
    )


async def test_fails_over_to_the_second_provider(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    first, second = two_servers
    first.enqueue(error(500), error(500))
    second.enqueue(chat_completion("from the backup"))
    chain = FailoverProvider([openai_on(first, "primary"), openai_on(second, "backup")])
    try:
        response = await chain.chat(HELLO, model="gpt-4o")
    finally:
        await chain.aclose()
    assert isinstance(chain, LLMProvider)
    assert response.content == "from the backup"
    assert response.provider == "backup"
    assert response.metadata["failover_errors"] == [
        "primary: ProviderUnavailable: HTTP 500 after 2 attempts: scripted failure"
    ]
    assert len(first.requests) == 2
    assert first.requests[0].body["model"] == "gpt-4o"
    assert second.requests[0].body["model"] == "gpt-4o-mini"  # its own default model


async def test_an_open_circuit_is_skipped_without_calling_its_server(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    first, second = two_servers
    breaker = CircuitBreaker(failure_threshold=1, clock=Clock())
    breaker.record_failure()
    chain = FailoverProvider([openai_on(first, "primary", breaker=breaker), openai_on(second, "b")])
    try:
        response = await chain.chat(HELLO)
    finally:
        await chain.aclose()
    assert response.provider == "b"
    assert first.requests == []
    assert "CircuitOpen" in response.metadata["failover_errors"][0]


async def test_the_template_answer_when_every_provider_fails(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    first, second = two_servers
    first.enqueue(error(503), error(503))
    second.enqueue(error(401, "bad key"))
    chain = FailoverProvider(
        [openai_on(first, "primary"), openai_on(second, "backup")],
        template_answer="We'll get back to you.",
    )
    try:
        response = await chain.chat(HELLO)
    finally:
        await chain.aclose()
    assert response.content == "We'll get back to you."
    assert response.provider == "template"
    assert response.metadata["fallback"] == "template"
    assert response.metadata["confidence"] == 0.0
    errors = response.metadata["errors"]
    assert len(errors) == 2
    assert errors[0].startswith("primary: ProviderUnavailable")
    assert "HTTP 401" in errors[1]
    assert response.cost_usd == 0.0


async def test_any_provider_failure_falls_through_but_budget_refusals_do_not() -> None:
    broken = Scripted("broken", RuntimeError("bug"))
    refused = Scripted("refused", BudgetExceeded("tenant:t", 1.0, 1.0, 0.5))
    never = Scripted("never", "unused")
    assert (await FailoverProvider([broken]).chat(HELLO)).content == DEFAULT_TEMPLATE_ANSWER
    with pytest.raises(BudgetExceeded):
        await FailoverProvider([refused, never]).chat(HELLO)
    assert never.calls == []


async def test_a_hung_provider_is_bounded_by_the_attempt_timeout() -> None:
    hung = Scripted("hung", "too late", delay=5)
    backup = Scripted("backup", "in time")
    chain = FailoverProvider([hung, backup], attempt_timeout_seconds=0.05)
    response = await chain.chat(HELLO)
    assert response.content == "in time"
    assert response.metadata["failover_errors"] == ["hung: timeout"]


async def test_offline_provider_as_the_last_real_provider() -> None:
    chain = FailoverProvider([Scripted("down", ProviderUnavailable("down")), OfflineProvider()])
    response = await chain.chat(HELLO, metadata={"question": "Hello!", "context": []})
    assert response.provider == "offline"
    assert response.metadata["offline"] is True


async def test_chat_arguments_reach_the_provider() -> None:
    provider = Scripted("p", "ok")
    await FailoverProvider([provider]).chat(
        HELLO, json_schema={"type": "object"}, max_tokens=5, metadata={"question": "q"}
    )
    assert provider.calls[0]["json_schema"] == {"type": "object"}
    assert provider.calls[0]["max_tokens"] == 5
    assert provider.calls[0]["metadata"] == {"question": "q"}


async def test_embeddings_fail_over_then_fall_back_to_the_offline_embedder(
    two_servers: tuple[FakeOpenAIServer, FakeOpenAIServer],
) -> None:
    first, second = two_servers
    first.enqueue(error(500), error(500))
    second.enqueue(embeddings(dimensions=3))
    chain = FailoverProvider([openai_on(first, "primary"), openai_on(second, "backup")])
    try:
        response = await chain.embed(["hello"])
        assert response.provider == "backup"
        assert len(response.vectors[0]) == 3

        first.enqueue(error(500), error(500))
        second.enqueue(error(500), error(500))
        response = await chain.embed(["hello"])
    finally:
        await chain.aclose()
    assert response.provider == "offline"
    assert len(response.vectors[0]) == 384


def test_the_chain_exposes_its_first_model_and_needs_a_template() -> None:
    assert FailoverProvider([OfflineProvider()]).model == "offline-extractive"
    assert FailoverProvider([]).model == "template"
    with pytest.raises(ValueError, match="template_answer"):
        FailoverProvider([], template_answer=" ")
