"""PII never reaches the provider (SPEC 4.11), checked on the wire of a real HTTP server.

The agent talks to `FakeOpenAIServer` through the real `OpenAIProvider` (official SDK):
intent classification, answer generation, history, knowledge, other users' memory and
embeddings all travel over HTTP, and no request body may contain the customer's PII.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentflow import AgentFrameworkBuilder, OpenAIProvider
from tests.kernel.fake_openai_server import FakeOpenAIServer
from tests.kernel.pipeline_fakes import CATEGORIES

EMAIL = "alice.smith@example.com"
CARD = "4111 1111 1111 1111"
CARD_DIGITS = "4111111111111111"
PHONE = "+1 415 555 0100"
SUPPORT_EMAIL = "refunds@corp.example"
SUPPORT_PHONE = "+44 20 7946 0958"
SECRETS = (EMAIL, CARD, CARD_DIGITS, PHONE, SUPPORT_EMAIL, SUPPORT_PHONE)

KNOWLEDGE = [
    {
        "id": "kb-refunds",
        "title": "Refunds for double charges",
        "text": "Double charges are refunded to the same card within 5 days. Questions: "
        f"{SUPPORT_EMAIL} or {SUPPORT_PHONE}.",
    }
]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def assert_no_pii(server: FakeOpenAIServer) -> None:
    assert server.requests, "the provider was never called"
    for request in server.requests:
        raw = request.raw.decode("utf-8")
        for secret in SECRETS:
            assert secret not in raw, f"{secret!r} reached {request.path}"


async def test_pii_in_messages_history_knowledge_and_memory_never_reaches_the_llm(
    server: FakeOpenAIServer,
) -> None:
    provider = OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=server.base_url)
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_knowledge(KNOWLEDGE)
        .build(provider)
    )

    await agent.process_message(
        "alice", f"I was charged twice on card {CARD}. Mail {EMAIL} or call {PHONE}."
    )
    await agent.process_message("alice", f"Also my other card {CARD_DIGITS} was charged twice")
    await agent.process_message("alice", "Thanks, that fixed it!")
    # Bob's question recalls Alice's resolved case (anonymised) and the knowledge article.
    await agent.process_message("bob", "I was charged twice on my card, can you refund it?")
    await agent.aclose()

    chat_requests = [r for r in server.requests if r.path.endswith("/chat/completions")]
    # At least one generation per question (the closing "thanks" needs none); the LLM
    # intent classifier adds its own requests, which assert_no_pii checks as well.
    assert len(chat_requests) >= 3
    assert_no_pii(server)
    sent = server.sent_text()
    assert "[EMAIL]" in sent
    assert "[CARD]" in sent
    assert "[PHONE]" in sent
    assert "Double charges are refunded" in sent  # the knowledge article itself did go


async def test_remote_embeddings_are_redacted_too(server: FakeOpenAIServer) -> None:
    provider = OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=server.base_url)
    agent = await (
        AgentFrameworkBuilder().with_embedder(provider).with_knowledge(KNOWLEDGE).build(provider)
    )

    reply = await agent.process_message("alice", f"Refund card {CARD}, reach me at {EMAIL}")
    await agent.aclose()

    assert any(r.path.endswith("/embeddings") for r in server.requests)
    assert_no_pii(server)
    assert reply.usage.prompt_tokens > 0
