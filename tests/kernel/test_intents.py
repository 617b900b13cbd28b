"""Intent categories, the offline classifier and the LLM classifier (SPEC 4.2)."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow.kernel.intents import (
    DEFAULT_OOS_THRESHOLD,
    OUT_OF_SCOPE,
    IntentCategory,
    IntentResult,
    LLMIntentClassifier,
    OfflineIntentClassifier,
)
from agentflow.kernel.llm.base import (
    ChatMessage,
    EmbeddingResponse,
    LLMProvider,
    LLMResponse,
    ProviderUnavailable,
    ToolSpec,
)

BANKING77_TRAIN = Path("/work/shared/data/banking77/train.csv")
BANKING77_TEST = Path("/work/shared/data/banking77/test.csv")

SUPPORT = [
    IntentCategory("GREETING", "Greetings", ["hello", "hi"]),
    IntentCategory(
        "PASSWORD_RESET",
        "Password and login problems",
        ["I forgot my password", "how do I reset my password", "I can't log in"],
    ),
    IntentCategory(
        "BILLING",
        "Invoices, charges and refunds",
        ["I was charged twice", "refund my invoice", "my bill is wrong"],
    ),
    IntentCategory(
        "OUTAGE",
        "Service outages",
        ["the site is down", "service not working", "is the app down?"],
        threshold=0.7,
    ),
]

UNRELATED = [
    "What's the weather in Paris tomorrow?",
    "Who won the football match last night?",
    "Recommend me a good pizza recipe",
    "Can you write a poem about the sea?",
]


@pytest.fixture(scope="module")
def support() -> OfflineIntentClassifier:
    return OfflineIntentClassifier(SUPPORT)


# --- categories and results -------------------------------------------------------------------


def test_category_accepts_the_quick_start_positional_form() -> None:
    category = IntentCategory("GREETING", "Greetings", ["hello", "hi"])
    assert category.examples == ("hello", "hi")
    assert category.threshold is None
    hash(category)  # frozen and hashable although a list was passed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValueError),
        ({"name": OUT_OF_SCOPE}, ValueError),
        ({"name": "A", "examples": "hello"}, TypeError),
        ({"name": "A", "examples": ["ok", 3]}, TypeError),
        ({"name": "A", "threshold": 1.5}, ValueError),
        ({"name": "A", "threshold": -0.1}, ValueError),
    ],
)
def test_category_rejects_bad_definitions(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        IntentCategory(**kwargs)


def test_threshold_zero_is_kept_for_always_escalate() -> None:
    assert IntentCategory("ESCALATION", threshold=0.0).threshold == 0.0


def test_result_rejects_confidence_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="confidence"):
        IntentResult("A", 1.2, False)
    with pytest.raises(ValueError, match="confidence"):
        IntentResult("A", float("nan"), False)
    assert IntentResult("A", 0.5, False).to_dict()["method"] == "offline"


# --- offline classifier on a tiny category set --------------------------------------------------


def test_quick_start_message_goes_to_the_actionable_intent(
    support: OfflineIntentClassifier,
) -> None:
    result = support.classify_sync("Hello! How do I reset my password?")
    assert result.name == "PASSWORD_RESET"
    assert not result.out_of_scope
    assert result.confidence > 0.8
    assert result.method == "offline"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("hello", "GREETING"),
        ("hi there", "GREETING"),
        ("my bill is wrong, refund please", "BILLING"),
        ("I need a refund for the charge", "BILLING"),
        ("the website is not loading", "OUTAGE"),
        ("pasword resetting", "PASSWORD_RESET"),  # typo and inflection
    ],
)
def test_classifies_paraphrases(
    support: OfflineIntentClassifier, message: str, expected: str
) -> None:
    assert support.classify_sync(message).name == expected


@pytest.mark.parametrize("message", UNRELATED)
def test_unrelated_message_is_out_of_scope(support: OfflineIntentClassifier, message: str) -> None:
    result = support.classify_sync(message)
    assert result.name == OUT_OF_SCOPE
    assert result.out_of_scope
    assert result.confidence < DEFAULT_OOS_THRESHOLD


def test_out_of_scope_result_names_the_best_candidate() -> None:
    # With threshold 1.0 nothing is confident enough; the near miss stays visible.
    strict = OfflineIntentClassifier(SUPPORT, oos_threshold=1.0)
    result = strict.classify_sync("my bill is wrong")
    assert result.out_of_scope
    assert result.alternatives[0][0] == "BILLING"
    assert result.confidence == result.alternatives[0][1]


def test_in_scope_alternatives_exclude_the_winner_and_are_sorted(
    support: OfflineIntentClassifier,
) -> None:
    result = support.classify_sync("Hello! How do I reset my password?")
    names = [name for name, _ in result.alternatives]
    assert "PASSWORD_RESET" not in names
    scores = [score for _, score in result.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < score <= result.confidence for score in scores)


def test_confidence_orders_exact_partial_and_unrelated(support: OfflineIntentClassifier) -> None:
    exact = support.classify_sync("I was charged twice").confidence
    partial = support.classify_sync("charged for something odd").confidence
    unrelated = support.classify_sync("What's the weather in Paris tomorrow?").confidence
    assert exact >= partial > unrelated


def test_oos_threshold_moves_the_boundary(support: OfflineIntentClassifier) -> None:
    message = "charged for something odd"
    confidence = support.classify_sync(message).confidence
    assert 0.0 < confidence < 1.0
    below = OfflineIntentClassifier(SUPPORT, oos_threshold=confidence + 1e-6)
    above = OfflineIntentClassifier(SUPPORT, oos_threshold=confidence - 1e-6)
    assert below.classify_sync(message).out_of_scope
    assert above.classify_sync(message).name == "BILLING"


@pytest.mark.parametrize("message", ["", "   \n\t", "!!!", "😀"])
def test_empty_or_symbol_only_message_is_out_of_scope(
    support: OfflineIntentClassifier, message: str
) -> None:
    result = support.classify_sync(message)
    assert result.out_of_scope
    assert result.confidence == 0.0
    assert result.alternatives == ()


def test_single_category_judges_scope_only() -> None:
    only = OfflineIntentClassifier([IntentCategory("GREETING", "Greetings", ["hello", "hi"])])
    assert only.classify_sync("hello!").name == "GREETING"
    assert only.classify_sync("hello!").confidence == pytest.approx(1.0)
    assert only.classify_sync("Where is my parcel?").out_of_scope


def test_categories_without_examples_use_name_and_description() -> None:
    classifier = OfflineIntentClassifier(
        [
            IntentCategory("BILLING", "Invoices, charges and refunds"),
            IntentCategory("SHIPPING", "Delivery and shipping of orders"),
        ]
    )
    assert classifier.classify_sync("I want a refund of this charge").name == "BILLING"
    assert classifier.classify_sync("when will my order be delivered").name == "SHIPPING"
    assert classifier.classify_sync("tell me a joke").out_of_scope


def test_examples_made_only_of_symbols_still_train() -> None:
    classifier = OfflineIntentClassifier(
        [IntentCategory("THUMBS_UP", examples=["👍"]), IntentCategory("HELP", examples=["help"])]
    )
    assert classifier.classify_sync("help me").name == "HELP"


def test_batch_matches_single_classification(support: OfflineIntentClassifier) -> None:
    messages = ["hello", "my bill is wrong", "", *UNRELATED]
    assert support.classify_batch(messages) == [support.classify_sync(m) for m in messages]


async def test_async_classify_matches_sync(support: OfflineIntentClassifier) -> None:
    history = [ChatMessage("user", "hello")]
    assert await support.classify("refund my invoice", history) == support.classify_sync(
        "refund my invoice"
    )


@pytest.mark.parametrize(
    ("categories", "kwargs"),
    [
        ([], {}),
        ([IntentCategory("A"), IntentCategory("A")], {}),
        ([IntentCategory("A")], {"oos_threshold": 1.5}),
        ([IntentCategory("A")], {"temperature": 0.0}),
    ],
)
def test_offline_classifier_rejects_bad_setup(
    categories: list[IntentCategory], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        OfflineIntentClassifier(categories, **kwargs)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300))
def test_confidence_stays_within_unit_interval(support: OfflineIntentClassifier, text: str) -> None:
    result = support.classify_sync(text)
    assert 0.0 <= result.confidence <= 1.0
    assert all(0.0 <= score <= 1.0 for _, score in result.alternatives)
    assert result.out_of_scope == (result.name == OUT_OF_SCOPE)


# --- a real subset of BANKING77 ------------------------------------------------------------------


def _banking_subset(path: Path, categories: set[str]) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            (r["text"], r["category"])
            for r in csv.DictReader(handle)
            if r["category"] in categories
        ]


@pytest.mark.skipif(not BANKING77_TRAIN.exists(), reason="BANKING77 not available")
def test_banking77_subset_is_accurate_and_calibrated() -> None:
    chosen = {
        "card_arrival",
        "exchange_rate",
        "lost_or_stolen_card",
        "top_up_failed",
        "pin_blocked",
    }
    examples: dict[str, list[str]] = {}
    for text, label in _banking_subset(BANKING77_TRAIN, chosen):
        examples.setdefault(label, []).append(text)
    classifier = OfflineIntentClassifier(
        [IntentCategory(name, examples=texts) for name, texts in examples.items()]
    )
    assert classifier.temperature != pytest.approx(0.1)  # enough data: the temperature was fitted
    test = _banking_subset(BANKING77_TEST, chosen)
    results = classifier.classify_batch([text for text, _ in test])
    correct = [r.name == label for r, (_, label) in zip(results, test, strict=True)]
    accuracy = sum(correct) / len(correct)
    assert accuracy >= 0.9
    # Calibrated: mean confidence tracks accuracy.
    mean_confidence = sum(r.confidence for r in results) / len(results)
    assert abs(mean_confidence - accuracy) < 0.08


# --- LLM classifier with a scripted provider ---------------------------------------------------


class ScriptedProvider:
    """An LLMProvider whose chat replies are queued by the test; records every request."""

    name = "scripted"

    def __init__(self, *replies: str | BaseException | Callable[[], Any]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        model: str | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LLMResponse:
        self.requests.append(
            {
                "messages": messages,
                "model": model,
                "json_schema": json_schema,
                "temperature": temperature,
                "metadata": metadata,
            }
        )
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            reply = await reply()
        return LLMResponse(content=reply, model=model or "scripted-1", provider=self.name)

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        raise AssertionError("the LLM intent classifier must never ask for embeddings")


def _llm(provider: ScriptedProvider, **kwargs: Any) -> LLMIntentClassifier:
    return LLMIntentClassifier(
        provider, SUPPORT, fallback=OfflineIntentClassifier(SUPPORT), model="m-1", **kwargs
    )


def test_scripted_provider_implements_the_protocol() -> None:
    assert isinstance(ScriptedProvider(), LLMProvider)


async def test_llm_valid_json_is_used() -> None:
    provider = ScriptedProvider(json.dumps({"intent": "BILLING", "confidence": 0.92}))
    result = await _llm(provider).classify("where did this charge come from?")
    assert result == IntentResult("BILLING", 0.92, False, method="llm")
    request = provider.requests[0]
    assert request["temperature"] == 0.0
    assert request["model"] == "m-1"
    assert request["json_schema"]["properties"]["intent"]["enum"] == [
        "BILLING",
        "GREETING",
        "OUTAGE",
        "PASSWORD_RESET",
        OUT_OF_SCOPE,
    ]
    system, user = request["messages"]
    assert system.role == "system"
    for category in SUPPORT:
        assert category.name in system.content
        assert category.description in system.content
    assert '"I forgot my password"' in system.content
    assert user.role == "user"
    assert user.content.endswith("where did this charge come from?")
    assert request["metadata"]["categories"][0]["name"] == "GREETING"


async def test_llm_prompt_carries_recent_history() -> None:
    provider = ScriptedProvider(json.dumps({"intent": "PASSWORD_RESET", "confidence": 0.8}))
    history = [
        ChatMessage("user", "first"),
        ChatMessage("assistant", "second"),
        ChatMessage("tool", "tool output is not conversation"),
        ChatMessage("user", "third"),
        ChatMessage("assistant", "fourth"),
    ]
    await _llm(provider, history_messages=3).classify("still locked out", history)
    prompt = provider.requests[0]["messages"][1].content
    assert "first" not in prompt
    assert "tool output" not in prompt
    assert prompt.index("second") < prompt.index("third") < prompt.index("fourth")
    assert prompt.endswith("still locked out")


async def test_llm_out_of_scope_verdict() -> None:
    provider = ScriptedProvider(json.dumps({"intent": OUT_OF_SCOPE, "confidence": 0.9}))
    result = await _llm(provider).classify("what's the weather?")
    assert result.out_of_scope
    assert result.name == OUT_OF_SCOPE
    assert result.confidence == pytest.approx(0.1)
    assert result.method == "llm"


async def test_llm_low_confidence_is_out_of_scope() -> None:
    provider = ScriptedProvider(json.dumps({"intent": "OUTAGE", "confidence": 0.2}))
    result = await _llm(provider, oos_threshold=0.5).classify("hmm, is something off?")
    assert result.out_of_scope
    assert result.alternatives == (("OUTAGE", 0.2),)


@pytest.mark.parametrize(
    "reply",
    [
        "not json at all",
        '```json\n{"intent": "BILLING", "confidence": 0.9}\n```',
        json.dumps(["BILLING", 0.9]),
        json.dumps({"intent": "BILLING"}),
        json.dumps({"intent": "BILLING", "confidence": 0.9, "reason": "extra key"}),
        json.dumps({"intent": "BILLING", "confidence": 1.7}),
        json.dumps({"intent": "BILLING", "confidence": "high"}),
        json.dumps({"intent": "BILLING", "confidence": True}),
        json.dumps({"intent": 3, "confidence": 0.9}),
        json.dumps({"intent": "REFUNDS", "confidence": 0.9}),  # unknown category
        json.dumps({"intent": "billing", "confidence": 0.9}),  # names are exact
    ],
)
async def test_llm_invalid_reply_falls_back_to_offline(reply: str) -> None:
    provider = ScriptedProvider(reply)
    classifier = _llm(provider)
    result = await classifier.classify("my bill is wrong")
    offline = classifier.fallback.classify_sync("my bill is wrong")
    assert result.method == "fallback"
    assert (result.name, result.confidence) == (offline.name, offline.confidence)
    assert result.name == "BILLING"


@pytest.mark.parametrize(
    "error", [ProviderUnavailable("down"), RuntimeError("bug in a provider"), TimeoutError()]
)
async def test_llm_provider_error_falls_back(error: BaseException) -> None:
    result = await _llm(ScriptedProvider(error)).classify("hello")
    assert (result.name, result.method) == ("GREETING", "fallback")


async def test_llm_timeout_falls_back() -> None:
    async def never() -> str:
        await asyncio.sleep(10)
        return "{}"

    result = await _llm(ScriptedProvider(never), timeout_seconds=0.05).classify("hello")
    assert (result.name, result.method) == ("GREETING", "fallback")


async def test_llm_is_not_asked_about_an_empty_message() -> None:
    provider = ScriptedProvider()
    result = await _llm(provider).classify("  ")
    assert result.out_of_scope
    assert provider.requests == []


def test_llm_custom_prompt_keeps_literal_braces() -> None:
    classifier = _llm(
        ScriptedProvider(), system_prompt='Answer {"intent": ...}. Choose from:\n{categories}'
    )
    assert classifier.system_prompt.startswith('Answer {"intent": ...}. Choose from:\n- GREETING')
