"""The one interface every LLM provider implements (SPEC 4.6).

Providers are async, return token usage with every call, and raise the errors
below so the failover chain can tell "try the next provider" from "give up".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    # An assistant turn that asked for tools: chat APIs require it before the "tool" replies.
    tool_calls: tuple[ToolCallRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON schema of its input."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(slots=True)
class LLMResponse:
    content: str
    model: str
    provider: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    # Honest provenance: offline answers and template fallbacks say so here.
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EmbeddingResponse:
    vectors: list[list[float]]
    model: str
    provider: str
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0


class LLMError(Exception):
    """Base class of provider failures."""


class ProviderUnavailable(LLMError):
    """Transient or systemic failure: the next provider in the chain should be tried."""


class CircuitOpen(ProviderUnavailable):
    """The provider's circuit breaker is open; the call was not attempted."""


class RequestRejected(LLMError):
    """The provider is up but refuses this request (bad parameters, schema, too long...)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class InvalidResponse(LLMError):
    """The provider answered with something unusable (e.g. JSON that breaks the schema).

    ``response`` is the answer as received, so its tokens and cost can still be accounted.
    """

    def __init__(self, message: str, *, response: LLMResponse) -> None:
        super().__init__(message)
        self.response = response


class BudgetExceeded(LLMError):
    """A hard budget refuses the call before it is made."""

    def __init__(self, scope: str, limit_usd: float, spent_usd: float, estimate_usd: float) -> None:
        super().__init__(
            f"hard budget for {scope} exhausted: spent ${spent_usd:.4f} + estimate "
            f"${estimate_usd:.4f} > limit ${limit_usd:.4f}"
        )
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.estimate_usd = estimate_usd


@runtime_checkable
class LLMProvider(Protocol):
    """Chat with optional tools and JSON output, plus embeddings."""

    name: str

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
    ) -> LLMResponse: ...

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse: ...
