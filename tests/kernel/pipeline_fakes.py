"""Scripted stand-ins for the pipeline tests: an LLM that records what it was asked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.llm.base import (
    ChatMessage,
    EmbeddingResponse,
    LLMResponse,
    ProviderUnavailable,
    TokenUsage,
    ToolSpec,
)
from agentflow.kernel.llm.embeddings import OfflineEmbedder

DEFAULT_USAGE = TokenUsage(12, 8)

CATEGORIES = [
    IntentCategory(
        "LOGIN",
        "Login and password problems",
        [
            "I can't log in",
            "my login is broken",
            "password reset does not work",
            "I forgot my password",
            "the sign-in page shows an error",
        ],
    ),
    IntentCategory(
        "STORAGE",
        "Storage buckets and files",
        [
            "S3 bucket access denied",
            "question about S3 storage",
            "how do I upload files to S3",
            "my bucket is missing",
            "storage quota exceeded",
        ],
    ),
    IntentCategory(
        "BILLING",
        "Invoices and payments",
        [
            "my invoice is wrong",
            "I want a refund",
            "I was charged twice",
            "update my credit card",
            "when is my payment due",
        ],
    ),
]

KNOWLEDGE = [
    {
        "id": "kb-login",
        "title": "Fixing login problems",
        "text": "If your login is broken, clear your browser cookies and reset your password "
        "from the sign-in page. Then log in again.",
    },
    {
        "id": "kb-s3",
        "title": "S3 bucket access",
        "text": "To access an S3 bucket, grant the IAM role s3:GetObject permission on it.",
    },
]


class ScriptedLLM:
    """An `LLMProvider` answering from a script and recording every call.

    `answer` may be a string or a function of (messages, metadata); `on_call` is awaited
    inside each answer generation (to interleave concurrent runs deterministically).
    """

    name = "scripted"
    model = "scripted-model"

    def __init__(
        self,
        answer: str | Callable[[list[ChatMessage], dict[str, Any]], str] = "Scripted answer.",
        *,
        confidence: float | None = 0.9,
        usage: TokenUsage = DEFAULT_USAGE,
        cost_usd: float = 0.002,
        fail: bool = False,
        on_call: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.answer = answer
        self.confidence = confidence
        self.usage = usage
        self.cost_usd = cost_usd
        self.fail = fail
        self.on_call = on_call
        self.calls: list[dict[str, Any]] = []
        self.json_calls: list[dict[str, Any]] = []
        self._embedder = OfflineEmbedder()

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
        call = {"messages": messages, "metadata": metadata or {}, "json_schema": json_schema}
        if json_schema is not None:
            # The LLM intent classifier asks for JSON. Kept apart from `calls` (the answer
            # generations); the non-JSON reply makes it fall back to the offline classifier.
            self.json_calls.append(call)
            if self.fail:
                raise ProviderUnavailable("scripted outage")
            return LLMResponse(content="no JSON here", model=self.model, provider=self.name)
        self.calls.append(call)
        if self.on_call is not None:
            await self.on_call(call)
        if self.fail:
            raise ProviderUnavailable("scripted outage")
        text = self.answer(messages, metadata or {}) if callable(self.answer) else self.answer
        meta: dict[str, Any] = {}
        if self.confidence is not None:
            meta["confidence"] = self.confidence
        return LLMResponse(
            content=text,
            model=model or self.model,
            provider=self.name,
            usage=self.usage,
            cost_usd=self.cost_usd,
            metadata=meta,
        )

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        return await self._embedder.embed(texts)

    @property
    def sent_text(self) -> str:
        parts = []
        for call in [*self.json_calls, *self.calls]:
            parts.extend(m.content for m in call["messages"])
            parts.append(repr(call["metadata"]))
        return "\n".join(parts)


class FakeClock:
    """Wall-clock seconds that only move when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def yield_a_few(times: int = 5) -> None:
    for _ in range(times):
        await asyncio.sleep(0)
