"""The one door every LLM call of a run goes through.

`GuardedProvider` wraps the agent's provider chain (failover, budgets) and
1. redacts PII from every message and every piece of context before the call, so
   neither the message nor retrieved text can carry it to a provider,
2. tags the call with the agent and tenant so budgets and the cost tracker see it,
3. adds the call's tokens, dollars and provenance to the current run (a ContextVar,
   so handlers and the LLM intent classifier are metered without passing a run around).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from agentflow.kernel import tracing
from agentflow.kernel.llm.base import (
    BudgetExceeded,
    ChatMessage,
    EmbeddingResponse,
    LLMProvider,
    LLMResponse,
    TokenUsage,
    ToolSpec,
)

if TYPE_CHECKING:
    from agentflow.kernel.guardrails import PIIRedactor

# Redacted texts are cached: history turns and knowledge articles repeat call after call.
_CACHE_SIZE = 8_192
_CACHE_MAX_CHARS = 8_192


# A run that made no call yet (frozen, so one shared instance does for every run).
_NO_USAGE = TokenUsage()


class RunState:
    """What one `process_message` call spent and which providers answered it."""

    __slots__ = (
        "budget_error",
        "calls",
        "cost_usd",
        "fallbacks",
        "model",
        "offline",
        "provider",
        "spent",
        "tenant_id",
        "trace_id",
        "usage",
    )

    def __init__(self, trace_id: str, tenant_id: str | None = None) -> None:
        self.trace_id = trace_id
        self.tenant_id = tenant_id
        self.usage = _NO_USAGE
        self.cost_usd = 0.0
        self.calls = 0
        self.provider: str | None = None
        self.model: str | None = None
        self.offline = True
        self.fallbacks: list[str] = []
        self.budget_error: BudgetExceeded | None = None
        # (total tokens, cost in USD) so far: what a plan step's share is measured against.
        self.spent: tuple[int, float] = (0, 0.0)

    def record(self, response: LLMResponse | EmbeddingResponse) -> None:
        # TokenUsage is frozen: the first call's own usage can stand for the run's total.
        usage = self.usage
        self.usage = response.usage if usage is _NO_USAGE else usage + response.usage
        self.cost_usd += response.cost_usd
        self.spent = (self.usage.total_tokens, self.cost_usd)
        if isinstance(response, EmbeddingResponse):
            return
        self.calls += 1
        self.provider = response.provider
        self.model = response.model
        meta = response.metadata
        if not meta.get("offline"):
            self.offline = False
        if meta.get("fallback") == "template":
            self.fallbacks.extend(meta.get("errors", ()))
        self.fallbacks.extend(meta.get("failover_errors", ()))


CURRENT_RUN: ContextVar[RunState | None] = ContextVar("agentflow_run", default=None)


class GuardedProvider:
    """`LLMProvider` wrapper: redaction, budget scopes, per-run metering."""

    def __init__(
        self,
        inner: LLMProvider,
        *,
        redactor: PIIRedactor | None,
        agent_id: str | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = getattr(inner, "model", None)
        self.redactor = redactor
        self.agent_id = agent_id
        self._cache: dict[str, str] = {}

    def redact_text(self, text: str) -> str:
        if self.redactor is None:
            return text
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        redacted = self.redactor.redact(text).text
        if len(text) <= _CACHE_MAX_CHARS:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[text] = redacted
        return redacted

    def _redact_message(self, message: ChatMessage) -> ChatMessage:
        content = self.redact_text(message.content)
        if content == message.content:
            return message  # most turns carry no PII: no copy
        return ChatMessage(
            message.role, content, message.name, message.tool_call_id, message.tool_calls
        )

    def redact_value(self, value: Any) -> Any:
        kind = type(value)  # exact types first: every call's context is strings and scores
        if kind is str:
            return self.redact_text(value)
        if kind is float or value is None:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_value(item) for item in value]
        if self.redactor is not None and isinstance(value, int) and not isinstance(value, bool):
            return self.redactor.redact_mapping(value)
        return value

    def _scoped(self, metadata: dict[str, Any] | None, run: RunState | None) -> dict[str, Any]:
        tenant = None if run is None else run.tenant_id
        if self.redactor is None and self.agent_id is None and tenant is None and metadata:
            return metadata  # nothing to redact or tag: no copy
        if not metadata:
            meta: dict[str, Any] = {}
        elif self.redactor is not None:
            meta = self.redact_value(metadata)
        else:
            meta = dict(metadata)
        if self.agent_id is not None:
            meta.setdefault("agent_id", self.agent_id)
        if tenant is not None:
            meta.setdefault("tenant_id", tenant)
        return meta

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
        run = CURRENT_RUN.get()
        if self.redactor is not None:
            messages = [self._redact_message(m) for m in messages]
        try:
            # The coroutine runs when awaited, so inside the span when there is one.
            call = self.inner.chat(
                messages,
                model=model,
                tools=tools,
                json_schema=json_schema,
                temperature=temperature,
                max_tokens=max_tokens,
                metadata=self._scoped(metadata, run),
            )
            if tracing.active():  # no span at all while nothing records one
                with tracing.llm_span("chat", model or self.model) as span:
                    response = await call
                    tracing.record_llm_response(span, response)
            else:
                response = await call
        except BudgetExceeded as exc:
            if run is not None:
                run.budget_error = exc
            raise
        if run is not None:
            run.record(response)
        return response

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        response = await self.inner.embed([self.redact_text(t) for t in texts], model=model)
        run = CURRENT_RUN.get()
        if run is not None:
            run.record(response)
        return response

    async def aclose(self) -> None:
        closer = getattr(self.inner, "aclose", None)
        if closer is not None:
            await closer()


class GuardedEmbedder:
    """A remote embedder behind the same door: texts redacted, usage added to the run."""

    def __init__(self, inner: Any, *, redact: Callable[[str], str]) -> None:
        self.inner = inner
        self.dimensions = getattr(inner, "dimensions", None)
        self._redact = redact

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        response: EmbeddingResponse = await self.inner.embed(
            [self._redact(text) for text in texts], model=model
        )
        run = CURRENT_RUN.get()
        if run is not None:
            run.record(response)
        return response
