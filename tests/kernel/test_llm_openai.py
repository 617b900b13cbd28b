"""The OpenAI provider against a real local OpenAI-compatible HTTP server (no network)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentflow.kernel.costs import PriceTable
from agentflow.kernel.llm.base import (
    ChatMessage,
    CircuitOpen,
    InvalidResponse,
    LLMProvider,
    ProviderUnavailable,
    RequestRejected,
    ToolCallRequest,
    ToolSpec,
)
from agentflow.kernel.llm.openai_provider import OpenAIProvider, RetryPolicy
from agentflow.kernel.llm.resilience import CircuitBreaker
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    ScriptedResponse,
    chat_completion,
    embeddings,
    error,
    rate_limited,
    slow,
)

FAST_RETRIES = RetryPolicy(initial_wait=0.001, max_wait=0.005, jitter=0.001, retry_after_cap=0.05)
HELLO = [ChatMessage("user", "Hello!")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SleepRecorder:
    """Stands in for asyncio.sleep: records the backoff instead of waiting it out."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv
        assert srv.errors == []


@pytest.fixture
async def provider(server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    async with OpenAIProvider(
        "gpt-4o-mini",
        api_key="test-key",
        base_url=server.base_url,
        timeout_seconds=2,
        retry_policy=FAST_RETRIES,
    ) as p:
        yield p


def make(server: FakeOpenAIServer, **kwargs: Any) -> OpenAIProvider:
    options: dict[str, Any] = {
        "api_key": "test-key",
        "base_url": server.base_url,
        "timeout_seconds": 2,
        "retry_policy": FAST_RETRIES,
    }
    options.update(kwargs)
    return OpenAIProvider("gpt-4o-mini", **options)


async def test_success_returns_content_usage_and_cost(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(chat_completion("Hi! How can I help?", prompt_tokens=120, completion_tokens=30))
    response = await provider.chat(
        [ChatMessage("system", "Be brief."), *HELLO], temperature=0.2, max_tokens=50
    )
    assert isinstance(provider, LLMProvider)
    assert response.content == "Hi! How can I help?"
    assert response.provider == "openai"
    assert response.model == "gpt-4o-mini"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (120, 30)
    assert response.cost_usd == pytest.approx((120 * 0.15 + 30 * 0.60) / 1e6)
    assert response.metadata["offline"] is False
    assert response.metadata["attempts"] == 1
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 50  # compatible servers get the classic parameter
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
    ]
    assert "tools" not in request.body


async def test_cost_uses_the_injected_price_table(server: FakeOpenAIServer) -> None:
    server.enqueue(chat_completion(prompt_tokens=1_000_000, completion_tokens=0))
    async with make(server, price_table=PriceTable({"gpt-4o-mini": (3.0, 0.0)})) as provider:
        response = await provider.chat(HELLO)
    assert response.cost_usd == pytest.approx(3.0)


async def test_429_is_retried_after_retry_after(server: FakeOpenAIServer) -> None:
    sleep = SleepRecorder()
    server.enqueue(rate_limited(retry_after="0.03"), chat_completion("after the wait"))
    async with make(server, sleep=sleep) as provider:
        response = await provider.chat(HELLO)
    assert response.content == "after the wait"
    assert response.metadata["attempts"] == 2
    assert len(server.requests) == 2
    assert sleep.waits == [pytest.approx(0.03)]


async def test_retry_after_is_capped(server: FakeOpenAIServer) -> None:
    sleep = SleepRecorder()
    server.enqueue(rate_limited(retry_after="3600"), chat_completion())
    async with make(server, sleep=sleep) as provider:
        await provider.chat(HELLO)
    assert sleep.waits == [pytest.approx(FAST_RETRIES.retry_after_cap)]


async def test_backoff_grows_exponentially_without_retry_after(server: FakeOpenAIServer) -> None:
    sleep = SleepRecorder()
    policy = RetryPolicy(initial_wait=0.01, max_wait=1.0, jitter=0.0)
    server.enqueue(error(503), error(502), error(500), chat_completion("finally"))
    async with make(server, sleep=sleep, retry_policy=policy, max_retries=3) as provider:
        response = await provider.chat(HELLO)
    assert response.content == "finally"
    assert sleep.waits == [pytest.approx(0.01), pytest.approx(0.02), pytest.approx(0.04)]


async def test_timeouts_are_retried_then_the_provider_is_unavailable(
    server: FakeOpenAIServer,
) -> None:
    server.enqueue(slow(1.0), slow(1.0), slow(1.0))
    async with make(server, timeout_seconds=0.15, max_retries=2) as provider:
        with pytest.raises(ProviderUnavailable, match="timed out"):
            await provider.chat(HELLO)
    assert len(server.requests) == 3


async def test_server_errors_exhaust_retries(server: FakeOpenAIServer) -> None:
    server.enqueue(error(500), error(500))
    async with make(server, max_retries=1) as provider:
        with pytest.raises(ProviderUnavailable, match="HTTP 500 after 2 attempts"):
            await provider.chat(HELLO)
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [400, 422])
async def test_bad_requests_are_not_retried_and_do_not_trip_the_breaker(
    server: FakeOpenAIServer, status: int
) -> None:
    server.enqueue(error(status, "bad parameter"))
    breaker = CircuitBreaker(failure_threshold=1)
    async with make(server, breaker=breaker) as provider:
        with pytest.raises(RequestRejected, match="bad parameter") as info:
            await provider.chat(HELLO)
    assert info.value.status_code == status
    assert len(server.requests) == 1
    assert breaker.state == "closed"


async def test_bad_credentials_fail_over_without_retrying(server: FakeOpenAIServer) -> None:
    server.enqueue(error(401, "invalid api key"))
    async with make(server) as provider:
        with pytest.raises(ProviderUnavailable, match="HTTP 401"):
            await provider.chat(HELLO)
    assert len(server.requests) == 1


async def test_connection_refused_is_unavailable() -> None:
    with FakeOpenAIServer() as srv:
        base_url = srv.base_url  # the port is closed once the server stops
    async with OpenAIProvider(
        "gpt-4o-mini", api_key="k", base_url=base_url, max_retries=1, retry_policy=FAST_RETRIES
    ) as provider:
        with pytest.raises(ProviderUnavailable, match="connection failed after 2 attempts"):
            await provider.chat(HELLO)


async def test_repeated_failures_open_the_breaker_and_it_half_opens_after_cooldown(
    server: FakeOpenAIServer,
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=30, clock=clock)
    server.enqueue(error(500), error(500))
    async with make(server, breaker=breaker, max_retries=0) as provider:
        for _ in range(2):
            with pytest.raises(ProviderUnavailable):
                await provider.chat(HELLO)
        assert breaker.state == "open"
        with pytest.raises(CircuitOpen):
            await provider.chat(HELLO)
        assert len(server.requests) == 2  # the open breaker did not call the server

        clock.now += 30
        assert breaker.state == "half_open"
        server.enqueue(chat_completion("back"))
        response = await provider.chat(HELLO)
    assert response.content == "back"
    assert breaker.state == "closed"
    assert len(server.requests) == 3


async def test_a_failed_probe_reopens_the_breaker(server: FakeOpenAIServer) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10, clock=clock)
    server.enqueue(error(503), error(503))
    async with make(server, breaker=breaker, max_retries=0) as provider:
        with pytest.raises(ProviderUnavailable):
            await provider.chat(HELLO)
        clock.now += 10
        with pytest.raises(ProviderUnavailable):
            await provider.chat(HELLO)  # the probe reaches the server and fails
        with pytest.raises(CircuitOpen):
            await provider.chat(HELLO)
    assert len(server.requests) == 2
    assert breaker.state == "open"


LOOKUP = ToolSpec(
    name="lookup_order",
    description="Find an order by id",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}},
)


async def test_tools_are_offered_and_tool_calls_parsed(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(
        chat_completion(
            None,
            tool_calls=[{"id": "call_9", "name": "lookup_order", "arguments": {"order_id": "A1"}}],
        )
    )
    response = await provider.chat([ChatMessage("user", "Where is order A1?")], tools=[LOOKUP])
    assert response.content == ""
    assert response.tool_calls == [
        ToolCallRequest(id="call_9", name="lookup_order", arguments={"order_id": "A1"})
    ]
    assert response.metadata["finish_reason"] == "tool_calls"
    assert server.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by id",
                "parameters": LOOKUP.parameters,
            },
        }
    ]


async def test_tool_results_are_sent_back_after_the_assistant_tool_calls(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    call = ToolCallRequest(id="call_9", name="lookup_order", arguments={"order_id": "A1"})
    await provider.chat(
        [
            ChatMessage("user", "Where is order A1?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", '{"status": "shipped"}', tool_call_id="call_9"),
        ],
        tools=[LOOKUP],
    )
    assistant, tool = server.requests[0].messages[1:]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["id"] == "call_9"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"order_id": "A1"}
    assert tool == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_9"}


async def test_malformed_tool_arguments_are_an_invalid_response(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(chat_completion(None, tool_calls=[{"name": "lookup_order", "arguments": "{"}]))
    with pytest.raises(InvalidResponse, match="malformed arguments"):
        await provider.chat(HELLO, tools=[LOOKUP])


SCHEMA: dict[str, Any] = {
    "title": "Intent result",
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["GREETING", "BILLING"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["intent", "confidence"],
}


async def test_json_output_is_requested_parsed_and_validated(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(chat_completion('{"intent": "GREETING", "confidence": 0.93}'))
    response = await provider.chat(HELLO, json_schema=SCHEMA)
    assert response.metadata["json"] == {"intent": "GREETING", "confidence": 0.93}
    response_format = server.requests[0].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Intent_result"
    assert response_format["json_schema"]["schema"] == SCHEMA


async def test_json_in_a_code_fence_is_accepted(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(chat_completion('```json\n{"intent": "BILLING", "confidence": 0.5}\n```'))
    response = await provider.chat(HELLO, json_schema=SCHEMA)
    assert response.metadata["json"]["intent"] == "BILLING"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Sure! The intent is GREETING.", "not JSON"),
        ('{"intent": "SHOPPING", "confidence": 0.9}', "violates the schema at intent"),
        ('{"intent": "GREETING"}', "violates the schema"),
    ],
)
async def test_invalid_json_output_raises_with_the_response_attached(
    server: FakeOpenAIServer, provider: OpenAIProvider, content: str, message: str
) -> None:
    server.enqueue(chat_completion(content, prompt_tokens=40, completion_tokens=9))
    with pytest.raises(InvalidResponse, match=message) as info:
        await provider.chat(HELLO, json_schema=SCHEMA)
    assert info.value.response.usage.total_tokens == 49  # still accounted for
    assert info.value.response.cost_usd > 0


async def test_an_invalid_schema_is_rejected_before_calling(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    with pytest.raises(RequestRejected, match="invalid JSON schema"):
        await provider.chat(HELLO, json_schema={"type": 12})
    assert server.requests == []


async def test_missing_usage_is_estimated_and_flagged(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(chat_completion("x" * 40, include_usage=False))
    response = await provider.chat([ChatMessage("user", "y" * 400)])
    assert response.metadata["usage_estimated"] is True
    assert response.usage.prompt_tokens >= 100
    assert response.usage.completion_tokens == 10


async def test_embeddings_use_the_embeddings_endpoint(
    server: FakeOpenAIServer, provider: OpenAIProvider
) -> None:
    server.enqueue(embeddings([[0.1, 0.2], [0.3, 0.4]], prompt_tokens=1_000_000))
    response = await provider.embed(["first", "second"])
    assert response.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert response.usage.prompt_tokens == 1_000_000
    assert response.cost_usd == pytest.approx(0.02)  # text-embedding-3-small
    [request] = server.requests
    assert request.path == "/v1/embeddings"
    assert request.body["input"] == ["first", "second"]
    assert request.body["model"] == "text-embedding-3-small"
    assert (await provider.embed([])).vectors == []
    assert len(server.requests) == 1  # nothing to embed: no call


async def test_embedding_failures_are_retried_too(server: FakeOpenAIServer) -> None:
    server.enqueue(error(503), embeddings(dimensions=4))
    async with make(server) as provider:
        response = await provider.embed(["hello"])
    assert len(response.vectors[0]) == 4
    assert len(server.requests) == 2


async def test_openai_itself_gets_max_completion_tokens(server: FakeOpenAIServer) -> None:
    async with make(server, max_tokens_param="max_completion_tokens") as provider:
        await provider.chat(HELLO, max_tokens=64)
    body = server.requests[0].body
    assert body["max_completion_tokens"] == 64
    assert "max_tokens" not in body


def test_an_api_key_is_required_for_openai_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key"):
        OpenAIProvider("gpt-4o-mini")


async def test_self_hosted_servers_need_no_key(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with OpenAIProvider("llama3", base_url=server.base_url) as provider:
        await provider.chat(HELLO)
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_a_malformed_body_is_unavailable_and_the_server_answers_by_default(
    server: FakeOpenAIServer,
) -> None:
    server.enqueue(ScriptedResponse(status=200, raw_body=b"{not json"))
    async with make(server, max_retries=0) as provider:
        with pytest.raises(ProviderUnavailable, match="malformed response body"):
            await provider.chat([ChatMessage("user", "first")])
        response = await provider.chat([ChatMessage("user", "second secret")])
    assert response.content == "ok"
    assert "second secret" in server.sent_text()
