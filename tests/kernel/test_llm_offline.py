"""The offline provider: extractive answers, honest metadata, no network, zero cost."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from agentflow.kernel.llm.base import ChatMessage, InvalidResponse, LLMProvider, RequestRejected
from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER, OfflineProvider

QUESTION = "How do I reset my password?"

RESET_ARTICLE: dict[str, Any] = {
    "kind": "knowledge",
    "id": "kb-1",
    "title": "Resetting your password",
    "text": (
        "To reset your password, open the login page and click 'Forgot password'. "
        "We email you a reset link that is valid for 30 minutes."
    ),
    "score": 0.8,
}
BILLING_ARTICLE: dict[str, Any] = {
    "kind": "knowledge",
    "id": "kb-2",
    "title": "Invoices",
    "text": "Invoices are issued on the first day of each month. You can download them as PDF.",
    "score": 0.3,
}


def ask(question: str = QUESTION) -> list[ChatMessage]:
    return [ChatMessage("system", "You are a support agent."), ChatMessage("user", question)]


@pytest.fixture
def provider() -> OfflineProvider:
    return OfflineProvider()


def test_it_implements_the_provider_interface(provider: OfflineProvider) -> None:
    assert isinstance(provider, LLMProvider)
    assert provider.name == "offline"


async def test_answers_extractively_from_the_best_context_item(provider: OfflineProvider) -> None:
    response = await provider.chat(
        ask(),
        metadata={"question": QUESTION, "context": [BILLING_ARTICLE, RESET_ARTICLE]},
    )
    assert "Forgot password" in response.content
    assert "Invoices" not in response.content
    assert response.provider == "offline"
    assert response.cost_usd == 0.0
    assert response.metadata["offline"] is True
    assert response.metadata["source"] == {
        "kind": "knowledge",
        "id": "kb-1",
        "title": "Resetting your password",
        "score": 0.8,
    }
    # 0.85 * (0.7 * 0.8 + 0.3 * coverage), coverage = {reset, password} all found
    assert response.metadata["confidence"] == pytest.approx(0.85 * (0.56 + 0.3))


async def test_lexical_overlap_can_beat_a_slightly_higher_retrieval_score(
    provider: OfflineProvider,
) -> None:
    decoy = {**BILLING_ARTICLE, "score": 0.85}
    response = await provider.chat(
        ask(), metadata={"question": QUESTION, "context": [decoy, RESET_ARTICLE]}
    )
    assert response.metadata["source"]["id"] == "kb-1"


async def test_golden_paths_answer_verbatim_and_more_confidently_than_articles(
    provider: OfflineProvider,
) -> None:
    golden = {
        "kind": "golden_path",
        "id": "gp-7",
        "title": QUESTION,
        "text": "Go to Settings > Security > Reset password.\nThe link expires in 30 minutes.",
        "score": 0.8,
    }
    response = await provider.chat(
        ask(), metadata={"question": QUESTION, "context": [RESET_ARTICLE, golden]}
    )
    assert response.content == golden["text"]
    assert response.metadata["source"]["id"] == "gp-7"
    article_only = await provider.chat(
        ask(), metadata={"question": QUESTION, "context": [RESET_ARTICLE]}
    )
    assert response.metadata["confidence"] > article_only.metadata["confidence"]


async def test_confidence_follows_retrieval_similarity(provider: OfflineProvider) -> None:
    confidences = []
    for score in (0.2, 0.5, 0.9):
        response = await provider.chat(
            ask(), metadata={"question": QUESTION, "context": [{**RESET_ARTICLE, "score": score}]}
        )
        confidences.append(response.metadata["confidence"])
    assert confidences == sorted(confidences)
    assert all(0.0 <= c <= 1.0 for c in confidences)


async def test_no_context_gives_an_honest_low_confidence_answer(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(ask(), metadata={"question": QUESTION, "context": []})
    assert response.content == DONT_KNOW_ANSWER
    assert response.metadata["offline"] is True
    assert response.metadata["confidence"] < 0.2
    assert response.metadata["source"] is None
    assert response.metadata["reason"] == "no context"


async def test_irrelevant_context_is_not_used(provider: OfflineProvider) -> None:
    weak = {**BILLING_ARTICLE, "score": 0.05}
    response = await provider.chat(ask(), metadata={"question": QUESTION, "context": [weak]})
    assert response.content == DONT_KNOW_ANSWER
    assert response.metadata["source"] is None
    assert response.metadata["confidence"] < 0.2


async def test_without_metadata_the_question_is_the_last_user_message(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(ask("Where is my parcel?"))
    assert response.content == DONT_KNOW_ANSWER
    assert response.usage.prompt_tokens > 0


async def test_long_articles_answer_from_the_best_sentence_onwards() -> None:
    provider = OfflineProvider(max_answer_chars=200)
    filler = " ".join(f"Our company was founded in {1990 + i} in a small town." for i in range(8))
    article = {
        "kind": "knowledge",
        "id": "kb-9",
        "title": "Account help",
        "text": (
            f"{filler} To reset your password, open Settings and choose Security. "
            "Then follow the emailed link. " + filler
        ),
        "score": 0.7,
    }
    response = await provider.chat(ask(), metadata={"question": QUESTION, "context": [article]})
    assert response.content.startswith("To reset your password")
    assert "Then follow the emailed link." in response.content  # a step, kept though unrelated
    assert "founded in 1990" not in response.content  # off-topic text on either side is not
    assert len(response.content) <= 200


async def test_usage_is_estimated_so_accounting_sees_the_call(provider: OfflineProvider) -> None:
    response = await provider.chat(
        ask(), metadata={"question": QUESTION, "context": [RESET_ARTICLE]}
    )
    assert response.usage.prompt_tokens > len(RESET_ARTICLE["text"]) // 4
    assert response.usage.completion_tokens == -(-len(response.content) // 4)
    assert response.model == "offline-extractive"


INTENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["GREETING", "PASSWORD_RESET", "BILLING"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reasoning": {"type": "string"},
    },
    "required": ["intent", "confidence"],
    "additionalProperties": False,
}
CATEGORIES = [
    {"name": "GREETING", "description": "Greetings", "examples": ["hello", "hi there"]},
    {
        "name": "PASSWORD_RESET",
        "description": "Password and login problems",
        "examples": ["I forgot my password", "cannot log in"],
    },
    {"name": "BILLING", "description": "Invoices and charges", "examples": ["my invoice"]},
]


async def test_json_requests_get_schema_valid_offline_classification(
    provider: OfflineProvider,
) -> None:
    response = await provider.chat(
        ask("I forgot my password and can't log in"),
        json_schema=INTENT_SCHEMA,
        metadata={"categories": CATEGORIES},
    )
    value = response.metadata["json"]
    jsonschema.validate(value, INTENT_SCHEMA)
    assert value["intent"] == "PASSWORD_RESET"
    assert 0.0 < value["confidence"] <= 1.0
    assert response.metadata["offline"] is True
    assert response.metadata["method"] == "offline-similarity"


async def test_json_classification_can_say_out_of_scope(provider: OfflineProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["PASSWORD_RESET", "BILLING", "OUT_OF_SCOPE"]}},
        "required": ["intent"],
    }
    response = await provider.chat(
        ask("Quantum chromodynamics lecture notes"),
        json_schema=schema,
        metadata={"categories": CATEGORIES},
    )
    assert response.metadata["json"] == {"intent": "OUT_OF_SCOPE"}


async def test_json_answer_fields_carry_the_extractive_answer(provider: OfflineProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "sources": {"type": "array"}},
        "required": ["answer"],
    }
    response = await provider.chat(
        ask(), json_schema=schema, metadata={"question": QUESTION, "context": [RESET_ARTICLE]}
    )
    assert "Forgot password" in response.metadata["json"]["answer"]


async def test_unsatisfiable_or_invalid_schemas_raise_llm_errors(
    provider: OfflineProvider,
) -> None:
    impossible = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}},
        "required": ["code"],
    }
    with pytest.raises(InvalidResponse, match="cannot satisfy"):
        await provider.chat(ask(), json_schema=impossible)
    with pytest.raises(RequestRejected, match="invalid JSON schema"):
        await provider.chat(ask(), json_schema={"type": "no-such-type"})


async def test_embed_uses_the_offline_embedder(provider: OfflineProvider) -> None:
    response = await provider.embed(["hello", "world"])
    assert response.provider == "offline"
    assert [len(v) for v in response.vectors] == [384, 384]
