"""AgentFlow: customer-support AI agents under human oversight.

The library API (no Django, no server)::

    from agentflow import AgentFrameworkBuilder, IntentCategory

    agent = await (AgentFrameworkBuilder()
        .with_intent_categories([IntentCategory("GREETING", "Greetings", ["hello", "hi"])])
        .build())
    reply = await agent.process_message(user_id="u1", message="Hello!")

Names are imported lazily on first use: Django also imports this package as an
app, and `import agentflow` must stay cheap and free of the kernel's
dependencies (numpy, scikit-learn) until something asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # building and running agents
    "AgentFrameworkBuilder": "agentflow.kernel.builder",
    "AgentPipeline": "agentflow.kernel.pipeline",
    "AgentReply": "agentflow.kernel.results",
    "SourceRef": "agentflow.kernel.results",
    "ContextItem": "agentflow.kernel.results",
    # intents
    "IntentCategory": "agentflow.kernel.intents",
    "IntentResult": "agentflow.kernel.intents",
    "OfflineIntentClassifier": "agentflow.kernel.intents",
    "OUT_OF_SCOPE": "agentflow.kernel.intents",
    # handlers and middleware
    "BaseHandler": "agentflow.kernel.handlers",
    "HandlerResult": "agentflow.kernel.handlers",
    "HandlerRegistry": "agentflow.kernel.handlers",
    "ProcessingContext": "agentflow.kernel.handlers",
    "Middleware": "agentflow.kernel.middleware",
    "LoggingMiddleware": "agentflow.kernel.middleware",
    "RateLimitMiddleware": "agentflow.kernel.middleware",
    "PIIRedactionMiddleware": "agentflow.kernel.middleware",
    "AuthMiddleware": "agentflow.kernel.middleware",
    "RateLimited": "agentflow.kernel.middleware",
    "Unauthorized": "agentflow.kernel.middleware",
    # threads, memory and stores
    "ThreadTransition": "agentflow.kernel.threads",
    "KnowledgeDocument": "agentflow.kernel.stores",
    "GoldenPath": "agentflow.kernel.stores",
    "Playbook": "agentflow.kernel.stores",
    "Session": "agentflow.kernel.stores",
    "ConversationThread": "agentflow.kernel.stores",
    "MemoryCase": "agentflow.kernel.stores",
    "SessionStore": "agentflow.kernel.stores",
    "ThreadStore": "agentflow.kernel.stores",
    "MemoryStore": "agentflow.kernel.stores",
    "KnowledgeStore": "agentflow.kernel.stores",
    "GoldenPathStore": "agentflow.kernel.stores",
    "ProceduralStore": "agentflow.kernel.stores",
    "ToolClient": "agentflow.kernel.context",
    # configuration and plugins
    "AgentFrameworkConfig": "agentflow.kernel.config",
    "ConfigLoader": "agentflow.kernel.config",
    "ConfigError": "agentflow.kernel.config",
    "AgentPlugin": "agentflow.kernel.plugins",
    "PluginManager": "agentflow.kernel.plugins",
    # LLM providers, costs, guardrails
    "ChatMessage": "agentflow.kernel.llm.base",
    "LLMProvider": "agentflow.kernel.llm.base",
    "LLMResponse": "agentflow.kernel.llm.base",
    "TokenUsage": "agentflow.kernel.llm.base",
    "BudgetExceeded": "agentflow.kernel.llm.base",
    "OfflineProvider": "agentflow.kernel.llm.offline",
    "OpenAIProvider": "agentflow.kernel.llm.openai_provider",
    "FailoverProvider": "agentflow.kernel.llm.resilience",
    "OfflineEmbedder": "agentflow.kernel.llm.embeddings",
    "CostTracker": "agentflow.kernel.costs",
    "PriceTable": "agentflow.kernel.costs",
    "Budget": "agentflow.kernel.costs",
    "BudgetGuard": "agentflow.kernel.costs",
    "PIIRedactor": "agentflow.kernel.guardrails",
}

__all__ = [
    "OUT_OF_SCOPE",
    "AgentFrameworkBuilder",
    "AgentFrameworkConfig",
    "AgentPipeline",
    "AgentPlugin",
    "AgentReply",
    "AuthMiddleware",
    "BaseHandler",
    "Budget",
    "BudgetExceeded",
    "BudgetGuard",
    "ChatMessage",
    "ConfigError",
    "ConfigLoader",
    "ContextItem",
    "ConversationThread",
    "CostTracker",
    "FailoverProvider",
    "GoldenPath",
    "GoldenPathStore",
    "HandlerRegistry",
    "HandlerResult",
    "IntentCategory",
    "IntentResult",
    "KnowledgeDocument",
    "KnowledgeStore",
    "LLMProvider",
    "LLMResponse",
    "LoggingMiddleware",
    "MemoryCase",
    "MemoryStore",
    "Middleware",
    "OfflineEmbedder",
    "OfflineIntentClassifier",
    "OfflineProvider",
    "OpenAIProvider",
    "PIIRedactionMiddleware",
    "PIIRedactor",
    "Playbook",
    "PluginManager",
    "PriceTable",
    "ProceduralStore",
    "ProcessingContext",
    "RateLimitMiddleware",
    "RateLimited",
    "Session",
    "SessionStore",
    "SourceRef",
    "ThreadStore",
    "ThreadTransition",
    "TokenUsage",
    "ToolClient",
    "Unauthorized",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from agentflow.kernel.builder import AgentFrameworkBuilder
    from agentflow.kernel.config import AgentFrameworkConfig, ConfigError, ConfigLoader
    from agentflow.kernel.context import ToolClient
    from agentflow.kernel.costs import Budget, BudgetGuard, CostTracker, PriceTable
    from agentflow.kernel.guardrails import PIIRedactor
    from agentflow.kernel.handlers import (
        BaseHandler,
        HandlerRegistry,
        HandlerResult,
        ProcessingContext,
    )
    from agentflow.kernel.intents import (
        OUT_OF_SCOPE,
        IntentCategory,
        IntentResult,
        OfflineIntentClassifier,
    )
    from agentflow.kernel.llm.base import (
        BudgetExceeded,
        ChatMessage,
        LLMProvider,
        LLMResponse,
        TokenUsage,
    )
    from agentflow.kernel.llm.embeddings import OfflineEmbedder
    from agentflow.kernel.llm.offline import OfflineProvider
    from agentflow.kernel.llm.openai_provider import OpenAIProvider
    from agentflow.kernel.llm.resilience import FailoverProvider
    from agentflow.kernel.middleware import (
        AuthMiddleware,
        LoggingMiddleware,
        Middleware,
        PIIRedactionMiddleware,
        RateLimited,
        RateLimitMiddleware,
        Unauthorized,
    )
    from agentflow.kernel.pipeline import AgentPipeline
    from agentflow.kernel.plugins import AgentPlugin, PluginManager
    from agentflow.kernel.results import AgentReply, ContextItem, SourceRef
    from agentflow.kernel.stores import (
        ConversationThread,
        GoldenPath,
        GoldenPathStore,
        KnowledgeDocument,
        KnowledgeStore,
        MemoryCase,
        MemoryStore,
        Playbook,
        ProceduralStore,
        Session,
        SessionStore,
        ThreadStore,
    )
    from agentflow.kernel.threads import ThreadTransition
