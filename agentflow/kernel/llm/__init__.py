"""LLM providers of the kernel: one interface, an OpenAI-compatible client, an offline provider
that needs no network, and the resilience layer (circuit breaker, failover, template answer).

Names are re-exported lazily so that ``import agentflow.kernel.llm`` stays cheap: the OpenAI
SDK is imported only when `OpenAIProvider` is first used, which keeps offline use light and
lets `agentflow.kernel.costs` import `base` without an import cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from agentflow.kernel.llm.base import (
    BudgetExceeded,
    ChatMessage,
    CircuitOpen,
    EmbeddingResponse,
    InvalidResponse,
    LLMError,
    LLMProvider,
    LLMResponse,
    ProviderUnavailable,
    RequestRejected,
    TokenUsage,
    ToolCallRequest,
    ToolSpec,
)

if TYPE_CHECKING:
    from agentflow.kernel.llm.embeddings import (
        OfflineEmbedder,
        SentenceTransformerEmbedder,
        cosine,
    )
    from agentflow.kernel.llm.offline import OfflineProvider
    from agentflow.kernel.llm.openai_provider import OpenAIProvider, RetryPolicy
    from agentflow.kernel.llm.resilience import (
        DEFAULT_TEMPLATE_ANSWER,
        CircuitBreaker,
        FailoverProvider,
    )

_LAZY = {
    "OfflineEmbedder": "embeddings",
    "SentenceTransformerEmbedder": "embeddings",
    "cosine": "embeddings",
    "OfflineProvider": "offline",
    "OpenAIProvider": "openai_provider",
    "RetryPolicy": "openai_provider",
    "CircuitBreaker": "resilience",
    "FailoverProvider": "resilience",
    "DEFAULT_TEMPLATE_ANSWER": "resilience",
}

__all__ = [
    "DEFAULT_TEMPLATE_ANSWER",
    "BudgetExceeded",
    "ChatMessage",
    "CircuitBreaker",
    "CircuitOpen",
    "EmbeddingResponse",
    "FailoverProvider",
    "InvalidResponse",
    "LLMError",
    "LLMProvider",
    "LLMResponse",
    "OfflineEmbedder",
    "OfflineProvider",
    "OpenAIProvider",
    "ProviderUnavailable",
    "RequestRejected",
    "RetryPolicy",
    "SentenceTransformerEmbedder",
    "TokenUsage",
    "ToolCallRequest",
    "ToolSpec",
    "cosine",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
