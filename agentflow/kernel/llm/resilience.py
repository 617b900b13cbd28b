"""Keeping answers flowing when providers fail (SPEC 4.6, 14).

`CircuitBreaker` stops calling a provider that keeps failing and probes it again after a
cool-down. `FailoverProvider` walks a chain of providers and, for chat, ends in a template
answer instead of an exception, so a run degrades rather than fails; for embeddings it ends
in the offline embedder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import structlog

from agentflow.kernel.llm.base import (
    BudgetExceeded,
    ChatMessage,
    CircuitOpen,
    EmbeddingResponse,
    LLMProvider,
    LLMResponse,
    ToolSpec,
)
from agentflow.kernel.llm.embeddings import OfflineEmbedder

__all__ = ["DEFAULT_TEMPLATE_ANSWER", "CircuitBreaker", "CircuitState", "FailoverProvider"]

log = structlog.get_logger(__name__)

CircuitState = Literal["closed", "open", "half_open"]
T = TypeVar("T")

DEFAULT_TEMPLATE_ANSWER = (
    "Sorry, I can't answer that right now. Your message has been passed on to our team and "
    "someone will get back to you shortly."
)


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open → half-open → closed.

    * closed: calls go through; ``failure_threshold`` consecutive failures open it.
    * open: `before_call` raises `CircuitOpen` without calling, for ``cooldown_seconds``.
    * half-open: exactly one probe call is let through; its success closes the breaker, its
      failure opens it for another cool-down. Other callers keep getting `CircuitOpen`.

    ``clock`` is injectable (monotonic seconds) so tests need not sleep.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cooldown_seconds < 0:
            raise ValueError("cooldown_seconds cannot be negative")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self.name = name
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self._lock = threading.Lock()

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state_locked()

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def _state_locked(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        """Admit a call or raise `CircuitOpen`; in half-open state only one probe is admitted."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return
            if state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return
            assert self._opened_at is not None
            retry_in = max(self.cooldown_seconds - (self._clock() - self._opened_at), 0.0)
        raise CircuitOpen(f"circuit of {self.name or 'provider'} is open; retry in {retry_in:.1f}s")

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("llm.circuit_closed", provider=self.name)
            self._failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            probe_failed = self._probe_in_flight
            self._probe_in_flight = False
            if probe_failed or self._failures >= self.failure_threshold:
                if self._opened_at is None or probe_failed:
                    log.warning(
                        "llm.circuit_opened",
                        provider=self.name,
                        consecutive_failures=self._failures,
                        cooldown_seconds=self.cooldown_seconds,
                    )
                self._opened_at = self._clock()

    def release_probe(self) -> None:
        """End a probe that neither succeeded nor failed (e.g. its call was cancelled)."""
        with self._lock:
            self._probe_in_flight = False


class FailoverProvider:
    """Try providers in order; chat ends in a template answer, embeddings in the offline embedder.

    A provider is skipped on any failure except `BudgetExceeded` (a budget refusal applies to
    the whole chain and is re-raised) and cancellation. ``attempt_timeout_seconds`` bounds each
    provider's call, so a hung provider costs at most that long before the next is tried.

    The template response is ``provider="template"``, ``metadata={"fallback": "template",
    "errors": [...], "confidence": 0.0, ...}`` so the pipeline escalates it to a human.
    Embeddings from the offline fallback have ``provider="offline"``: vectors of different
    models are not comparable, so callers that store vectors must check the model.
    """

    def __init__(
        self,
        providers: Sequence[LLMProvider],
        template_answer: str = DEFAULT_TEMPLATE_ANSWER,
        *,
        name: str = "failover",
        attempt_timeout_seconds: float | None = None,
        fallback_embedder: OfflineEmbedder | None = None,
    ) -> None:
        if not template_answer.strip():
            raise ValueError("template_answer cannot be empty")
        self.providers = list(providers)
        self.template_answer = template_answer
        self.name = name
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self._embedder = fallback_embedder or OfflineEmbedder()

    @property
    def model(self) -> str:
        """The first provider's default model (what preflight estimates price a call at)."""
        for provider in self.providers:
            model = getattr(provider, "model", None)
            if isinstance(model, str):
                return model
        return "template"

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
        errors: list[str] = []
        for index, provider in enumerate(self.providers):
            try:
                response = await self._bounded(
                    provider.chat(
                        messages,
                        # A model name belongs to the first provider's vendor; later ones
                        # answer with their own default.
                        model=model if index == 0 else None,
                        tools=tools,
                        json_schema=json_schema,
                        temperature=temperature,
                        max_tokens=max_tokens,
                        metadata=metadata,
                    )
                )
            except BudgetExceeded:
                raise
            except Exception as exc:
                errors.append(_describe(provider, exc))
                log.warning("llm.failover", provider=provider.name, error=errors[-1])
                continue
            if errors:
                response.metadata.setdefault("failover_errors", errors)
            return response
        log.error("llm.template_answer", errors=errors)
        return LLMResponse(
            content=self.template_answer,
            model="template",
            provider="template",
            metadata={
                "fallback": "template",
                "errors": errors,
                "offline": True,
                "confidence": 0.0,
                "source": None,
            },
        )

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        errors: list[str] = []
        for index, provider in enumerate(self.providers):
            try:
                return await self._bounded(
                    provider.embed(texts, model=model if index == 0 else None)
                )
            except BudgetExceeded:
                raise
            except Exception as exc:
                errors.append(_describe(provider, exc))
                log.warning("llm.embed_failover", provider=provider.name, error=errors[-1])
        log.error("llm.embed_offline_fallback", errors=errors)
        return await self._embedder.embed(texts)

    async def _bounded(self, call: Awaitable[T]) -> T:
        if self.attempt_timeout_seconds is None:
            return await call
        async with asyncio.timeout(self.attempt_timeout_seconds):
            return await call

    async def aclose(self) -> None:
        for provider in self.providers:
            closer = getattr(provider, "aclose", None)
            if closer is not None:
                await closer()


def _describe(provider: LLMProvider, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"{provider.name}: timeout"
    message = str(exc).removeprefix(f"{provider.name}: ")  # our errors already name it
    return f"{provider.name}: {type(exc).__name__}: {message}"
