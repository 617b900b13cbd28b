"""Handlers: priority routing, fall-through on failure, the default generative handler."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder, BaseHandler, HandlerResult
from agentflow.kernel.handlers import (
    AllHandlersFailed,
    GenerativeHandler,
    HandlerRegistry,
    ProcessingContext,
    ResolutionHandler,
    SyncTestHandler,
)
from agentflow.kernel.intents import IntentResult
from agentflow.kernel.stores import Session
from tests.kernel.pipeline_fakes import CATEGORIES, ScriptedLLM


class Fixed(BaseHandler):
    """Answers `text` for the intents it is given (all when None); optionally breaks."""

    def __init__(
        self,
        text: Any,
        priority: int = 0,
        intents: set[str] | None = None,
        breaks_in: str | None = None,
    ) -> None:
        self.text = text
        self.priority = priority
        self.intents = intents
        self.breaks_in = breaks_in
        self.handled = 0

    @property
    def name(self) -> str:
        return f"Fixed({self.text!r})"

    async def can_handle(self, intent: IntentResult, context: ProcessingContext) -> bool:
        if self.breaks_in == "can_handle":
            raise RuntimeError("can_handle broke")
        return self.intents is None or intent.name in self.intents

    async def handle(
        self,
        message: str,
        intent: IntentResult,
        context: ProcessingContext,
        session: Session,
        thread: Any,
    ) -> Any:
        self.handled += 1
        if self.breaks_in == "handle":
            raise RuntimeError("handle broke")
        return self.text


def context(llm: Any = None) -> ProcessingContext:
    return ProcessingContext(
        message="hello",
        user_id="u",
        session=Session("s", "u", 0.0, 0.0),
        thread=None,
        intent=IntentResult("LOGIN", 0.9, False),
        transition="new_topic",
        llm=llm or ScriptedLLM("generated", confidence=0.7),
    )


INTENT = IntentResult("LOGIN", 0.9, False)


async def test_highest_priority_handler_that_can_handle_answers() -> None:
    low, high = Fixed("low", priority=1), Fixed("high", priority=10)
    other = Fixed("billing", priority=100, intents={"BILLING"})
    registry = HandlerRegistry([low, other, high])

    outcome = await registry.route("hello", INTENT, context())

    assert outcome.result.content == "high"
    assert outcome.handler == "Fixed('high')"
    assert [h.get_priority() for h in registry.handlers[:3]] == [100, 10, 1]
    assert low.handled == 0


async def test_equal_priorities_keep_registration_order() -> None:
    registry = HandlerRegistry([Fixed("first"), Fixed("second")])

    assert (await registry.route("hello", INTENT, context())).result.content == "first"


@pytest.mark.parametrize("breaks_in", ["can_handle", "handle"])
async def test_a_failing_handler_falls_through_to_the_next(breaks_in: str) -> None:
    registry = HandlerRegistry([Fixed("broken", priority=5, breaks_in=breaks_in), Fixed("next")])

    outcome = await registry.route("hello", INTENT, context())

    assert outcome.result.content == "next"
    assert outcome.failures == [
        {"handler": "Fixed('broken')", "error": f"RuntimeError: {breaks_in} broke"}
    ]


async def test_an_unusable_return_value_falls_through() -> None:
    registry = HandlerRegistry([Fixed(42, priority=5), Fixed("fine")])

    outcome = await registry.route("hello", INTENT, context())

    assert outcome.result.content == "fine"
    assert "TypeError" in outcome.failures[0]["error"]


async def test_strings_and_dicts_are_accepted_as_results() -> None:
    as_dict = Fixed({"content": "from a dict", "confidence": 0.4, "tools_used": ["kb"]})
    outcome = await HandlerRegistry([as_dict]).route("hello", INTENT, context())

    assert outcome.result == HandlerResult(
        "from a dict", confidence=0.4, metadata={"tools_used": ["kb"]}
    )


async def test_the_default_handler_generates_from_context_when_none_applies() -> None:
    llm = ScriptedLLM("generated", confidence=0.7)
    registry = HandlerRegistry([Fixed("billing only", intents={"BILLING"})])

    outcome = await registry.route("hello", INTENT, context(llm))

    assert outcome.result.content == "generated"
    assert outcome.result.confidence == 0.7
    assert isinstance(registry.default, GenerativeHandler)
    assert llm.calls[0]["metadata"]["question"] == "hello"


class OnlyOnResolution(ResolutionHandler):
    """A built-in handler whose test a subclass replaces with a coroutine of its own."""

    def __init__(self) -> None:
        self.asked = 0

    async def can_handle(self, intent: IntentResult, context: ProcessingContext) -> bool:
        self.asked += 1
        return False  # never answers, whatever `accepts` says


class CountingAccepts(SyncTestHandler):
    """Answers every message; counts how often its synchronous test is asked."""

    priority = 10

    def __init__(self) -> None:
        self.accepted = 0

    def accepts(self, intent: IntentResult, context: ProcessingContext) -> bool:
        self.accepted += 1
        return True

    async def handle(
        self,
        message: str,
        intent: IntentResult,
        context: ProcessingContext,
        session: Session,
        thread: Any,
    ) -> HandlerResult:
        return HandlerResult(content="accepted")


async def test_a_synchronous_test_is_asked_directly_and_an_override_of_can_handle_wins() -> None:
    overridden, counting = OnlyOnResolution(), CountingAccepts()
    registry = HandlerRegistry([overridden, counting])
    resolution = context()
    resolution.transition = "resolution"  # ResolutionHandler.accepts would say yes

    outcome = await registry.route("thanks, fixed", INTENT, resolution)

    assert (overridden.asked, counting.accepted) == (1, 1)
    assert outcome.handler == "CountingAccepts"
    assert outcome.result.content == "accepted"
    assert await counting.can_handle(INTENT, resolution) is True  # the coroutine still answers


async def test_a_new_default_handler_is_routed_to() -> None:
    registry = HandlerRegistry()
    registry.default = Fixed("the new default")

    outcome = await registry.route("hello", INTENT, context())

    assert outcome.result.content == "the new default"


async def test_when_every_handler_fails_the_registry_says_so() -> None:
    registry = HandlerRegistry(
        [Fixed("x", breaks_in="handle")], default=Fixed("y", breaks_in="handle")
    )

    with pytest.raises(AllHandlersFailed) as failed:
        await registry.route("hello", INTENT, context())

    assert [f["handler"] for f in failed.value.failures] == ["Fixed('x')", "Fixed('y')"]


async def test_pipeline_records_the_failed_handler_and_answers_with_the_next() -> None:
    broken = Fixed("never", priority=50, intents={"LOGIN"}, breaks_in="handle")
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_handlers([broken])
        .build(ScriptedLLM("from the LLM", confidence=0.95))
    )

    reply = await agent.process_message("u1", "I can't log in")

    assert reply.content == "from the LLM"
    assert reply.metadata["handler"] == "GenerativeHandler"
    assert reply.metadata["degraded"] == [
        {"stage": "handler:Fixed('never')", "error": "RuntimeError: handle broke"}
    ]
