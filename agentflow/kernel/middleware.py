"""Middleware around `process_message` (SPEC 4.5): logging, rate limit, PII, auth.

`before_process` hooks run in registration order and may rewrite the message and
context; `after_process` hooks run in reverse order and may rewrite the reply;
`on_error` hooks see any exception and may turn it into a reply (the first
non-None one wins), otherwise the exception propagates. Typed errors
(`RateLimited`, `Unauthorized`) are meant to propagate to the caller, e.g. to
become an HTTP 429 or 401.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.results import AgentReply


class Middleware:
    """Base class; override only the hooks you need (the defaults pass things through)."""

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        return message, context

    async def after_process(
        self, user_id: str, reply: AgentReply, context: dict[str, Any]
    ) -> AgentReply:
        return reply

    async def on_error(
        self, user_id: str, error: Exception, context: dict[str, Any]
    ) -> AgentReply | None:
        return None


class MiddlewareChain:
    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware = list(middleware)

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def add(self, middleware: Middleware) -> None:
        self.middleware.append(middleware)

    async def before(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        for mw in self.middleware:
            message, context = await mw.before_process(user_id, message, context)
        return message, context

    async def after(self, user_id: str, reply: AgentReply, context: dict[str, Any]) -> AgentReply:
        for mw in reversed(self.middleware):
            reply = await mw.after_process(user_id, reply, context)
        return reply

    async def error(
        self, user_id: str, error: Exception, context: dict[str, Any]
    ) -> AgentReply | None:
        for mw in reversed(self.middleware):
            reply = await mw.on_error(user_id, error, context)
            if reply is not None:
                return reply
        return None


# ------------------------------------------------------------------------ logging


class _StderrLogger:
    """Writes each rendered line to the *current* sys.stderr (which tests may swap)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def make_logger(level: str = "INFO", *, json: bool = True) -> Any:
    """A private structlog logger (the global structlog configuration is left alone).

    Methods below `level` are no-ops, so disabled logging costs one call, no formatting.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.wrap_logger(
        _StderrLogger(),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        context_class=dict,
        cache_logger_on_first_use=True,
    )


class LoggingMiddleware(Middleware):
    """One structured line per message; message text only with `log_content=True` (PII)."""

    def __init__(
        self,
        logger: Any = None,
        *,
        level: str = "INFO",
        json: bool = True,
        log_content: bool = False,
    ) -> None:
        self.logger = logger if logger is not None else make_logger(level, json=json)
        self.log_content = log_content

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if self.log_content:
            self.logger.debug("agent.message_received", user_id=user_id, message=message)
        else:
            self.logger.debug("agent.message_received", user_id=user_id, chars=len(message))
        return message, context

    async def after_process(
        self, user_id: str, reply: AgentReply, context: dict[str, Any]
    ) -> AgentReply:
        extra = {"content": reply.content} if self.log_content else {}
        self.logger.info(
            "agent.message_processed",
            user_id=user_id,
            trace_id=reply.trace_id,
            session_id=reply.session_id,
            intent=reply.intent,
            intent_confidence=round(reply.intent_confidence, 3),
            confidence=round(reply.confidence, 3),
            thread_id=reply.thread_id,
            transition=reply.transition,
            escalated=reply.escalated,
            escalation_reason=reply.escalation_reason,
            duration_ms=round(reply.total_ms, 3),
            tokens=reply.usage.total_tokens,
            cost_usd=reply.cost_usd,
            provider=reply.metadata.get("provider"),
            **extra,
        )
        return reply

    async def on_error(
        self, user_id: str, error: Exception, context: dict[str, Any]
    ) -> AgentReply | None:
        self.logger.error(
            "agent.message_failed", user_id=user_id, error=f"{type(error).__name__}: {error}"
        )
        return None


# --------------------------------------------------------------------- rate limit


class RateLimited(Exception):
    """Too many messages from one user; retry after `retry_after` seconds."""

    def __init__(self, user_id: str, retry_after: float, limit: int, window_seconds: float) -> None:
        super().__init__(
            f"rate limit of {limit} messages per {window_seconds:g}s exceeded for user "
            f"{user_id!r}; retry after {retry_after:.1f}s"
        )
        self.user_id = user_id
        self.retry_after = retry_after
        self.limit = limit
        self.window_seconds = window_seconds


class RateLimitMiddleware(Middleware):
    """Per-user sliding window: at most `requests_per_minute` messages in any 60 s."""

    # Users idle for a whole window are dropped every this many calls, bounding memory.
    _SWEEP_EVERY = 1_024

    def __init__(
        self,
        requests_per_minute: int = 60,
        *,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        self.limit = requests_per_minute
        self.window = window_seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        now = self._clock()
        cutoff = now - self.window
        hits = self._hits.get(user_id)
        if hits is None:
            hits = self._hits[user_id] = deque()
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= self.limit:
            raise RateLimited(user_id, hits[0] + self.window - now, self.limit, self.window)
        hits.append(now)
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            self._sweep(cutoff)
        return message, context

    def _sweep(self, cutoff: float) -> None:
        for user in [u for u, hits in self._hits.items() if not hits or hits[-1] <= cutoff]:
            del self._hits[user]

    @property
    def tracked_users(self) -> int:
        return len(self._hits)


# ---------------------------------------------------------------------- guardrails


class PIIRedactionMiddleware(Middleware):
    """Redacts PII from the message and the caller's context before the pipeline sees them.

    With it in place nothing downstream (classification, stores, logs, the LLM) ever
    gets the raw text. The pipeline additionally redacts everything it sends to a
    provider or tool, so PII from stores cannot leak either.
    """

    def __init__(self, redactor: PIIRedactor | None = None) -> None:
        if redactor is None:
            redactor = PIIRedactor()
        self.redactor = redactor

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        result = self.redactor.redact(message)
        if context:
            context = self.redactor.redact_mapping(context)
        if result.findings:
            context = {**context, "pii_redacted": len(result.findings)}
        return result.text, context


# ------------------------------------------------------------------------- auth


class Unauthorized(Exception):
    """The caller is not allowed to talk to this agent."""


class AuthMiddleware(Middleware):
    """Refuses the message unless `verify(user_id, context)` (sync or async) is true."""

    def __init__(self, verify: Callable[[str, Mapping[str, Any]], bool | Awaitable[bool]]) -> None:
        self.verify = verify

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        allowed = self.verify(user_id, context)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise Unauthorized(f"user {user_id!r} is not authorised")
        return message, context
