"""Middleware: ordering, error hooks, logging, per-user sliding-window rate limit, PII, auth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentflow import (
    AgentFrameworkBuilder,
    AgentReply,
    AuthMiddleware,
    Middleware,
    PIIRedactionMiddleware,
    RateLimited,
    RateLimitMiddleware,
    Unauthorized,
)
from agentflow.kernel.middleware import LoggingMiddleware
from tests.kernel.pipeline_fakes import FakeClock, ScriptedLLM


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def before_process(
        self, user_id: str, message: str, context: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        self.log.append(f"before:{self.name}")
        return f"{message} [{self.name}]", {**context, self.name: True}

    async def after_process(
        self, user_id: str, reply: AgentReply, context: dict[str, Any]
    ) -> AgentReply:
        self.log.append(f"after:{self.name}")
        reply.metadata[self.name] = sorted(k for k in context if k in ("a", "b"))
        return reply


async def test_before_hooks_run_in_order_after_hooks_in_reverse() -> None:
    log: list[str] = []
    llm = ScriptedLLM()
    agent = await (
        AgentFrameworkBuilder()
        .with_middleware(Recorder("a", log))
        .with_middleware([Recorder("b", log)])
        .build(llm)
    )

    reply = await agent.process_message("u1", "hello")

    assert log == ["before:a", "before:b", "after:b", "after:a"]
    assert llm.calls[0]["metadata"]["question"] == "hello [a] [b]"
    assert reply.metadata["a"] == ["a", "b"]


async def test_on_error_can_turn_a_failure_into_a_reply() -> None:
    class Fallback(Middleware):
        async def on_error(
            self, user_id: str, error: Exception, context: dict[str, Any]
        ) -> AgentReply | None:
            return AgentReply(f"sorry: {error}", user_id, "", "", 0.0, 0.0, "", "")

    class Explode(Middleware):
        async def before_process(
            self, user_id: str, message: str, context: dict[str, Any]
        ) -> tuple[str, dict[str, Any]]:
            raise RuntimeError("boom")

    agent = await (
        AgentFrameworkBuilder().with_middleware([Fallback(), Explode()]).build(ScriptedLLM())
    )

    assert (await agent.process_message("u1", "hi")).content == "sorry: boom"


async def test_rate_limit_is_a_per_user_sliding_window() -> None:
    clock = FakeClock(1000.0)
    limiter = RateLimitMiddleware(3, window_seconds=60, clock=clock)

    for _ in range(3):
        await limiter.before_process("u1", "m", {})
        clock.advance(10)
    with pytest.raises(RateLimited) as limited:
        await limiter.before_process("u1", "m", {})
    await limiter.before_process("u2", "m", {})  # other users are not affected
    clock.advance(30.5)  # the first request (t=1000) leaves the window at t=1060
    await limiter.before_process("u1", "m", {})

    assert limited.value.retry_after == pytest.approx(30.0)
    assert limited.value.user_id == "u1"
    assert limited.value.limit == 3


async def test_rate_limiting_via_the_builder_raises_a_typed_error() -> None:
    agent = await AgentFrameworkBuilder().with_rate_limiting(2).build(ScriptedLLM())

    await agent.process_message("u1", "one")
    await agent.process_message("u1", "two")
    with pytest.raises(RateLimited) as limited:
        await agent.process_message("u1", "three")

    assert 0 < limited.value.retry_after <= 60
    assert agent.config.rate_limit.requests_per_minute == 2


async def test_pii_middleware_redacts_message_and_context_before_the_pipeline() -> None:
    middleware = PIIRedactionMiddleware()

    message, context = await middleware.before_process(
        "u1", "mail me at jo@example.com", {"note": "card 4111 1111 1111 1111", "n": 3}
    )

    assert message == "mail me at [EMAIL]"
    assert context == {"note": "card [CARD]", "n": 3, "pii_redacted": 1}


async def test_redact_before_persistence_keeps_pii_out_of_memory() -> None:
    agent = await (
        AgentFrameworkBuilder()
        .with_config({"guardrails": {"redact_before_persistence": True}})
        .build(ScriptedLLM("noted"))
    )

    await agent.process_message("u1", "my email is jo@example.com")

    history = [m.content for m in await agent.history("u1")]
    assert history == ["my email is [EMAIL]", "noted"]


async def test_without_redact_before_persistence_the_user_keeps_their_own_text() -> None:
    llm = ScriptedLLM("noted")
    agent = await AgentFrameworkBuilder().build(llm)

    await agent.process_message("u1", "my email is jo@example.com")

    assert (await agent.history("u1"))[0].content == "my email is jo@example.com"
    assert "jo@example.com" not in llm.sent_text  # but the provider never saw it


async def test_logging_middleware_writes_one_json_line_without_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = await AgentFrameworkBuilder().with_logging().build(ScriptedLLM("fine"))

    reply = await agent.process_message("u1", "secret text of the customer")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 1
    event = lines[0]
    assert event["event"] == "agent.message_processed"
    assert event["trace_id"] == reply.trace_id
    assert event["user_id"] == "u1"
    assert event["level"] == "info"
    assert "secret text" not in json.dumps(event)


async def test_logging_below_the_level_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    agent = await AgentFrameworkBuilder().with_logging("ERROR").build(ScriptedLLM())

    await agent.process_message("u1", "hello")

    assert capsys.readouterr().err == ""


async def test_logging_middleware_logs_errors() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def info(self, event: str, **kw: Any) -> None:
            events.append((event, kw))

        debug = error = info

    middleware = LoggingMiddleware(Logger())
    assert await middleware.on_error("u1", ValueError("bad"), {}) is None
    assert events == [("agent.message_failed", {"user_id": "u1", "error": "ValueError: bad"})]


async def test_auth_middleware_refuses_unknown_users() -> None:
    async def verify(user_id: str, context: Any) -> bool:
        return context.get("token") == "s3cret"

    agent = (
        await AgentFrameworkBuilder()
        .with_middleware(AuthMiddleware(verify))
        .build(ScriptedLLM("welcome"))
    )

    assert (await agent.process_message("u1", "my order", {"token": "s3cret"})).content == "welcome"
    with pytest.raises(Unauthorized):
        await agent.process_message("u1", "my order", {"token": "guess"})
