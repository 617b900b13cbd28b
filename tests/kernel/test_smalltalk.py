"""Small talk: greetings, thanks and goodbyes are answered, never escalated (issue 21)."""

from __future__ import annotations

import pytest

from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.kernel.smalltalk import SMALL_TALK, SMALL_TALK_REPLIES, small_talk_kind
from tests.kernel.pipeline_fakes import CATEGORIES, ScriptedLLM


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("hello", "greeting"),
        ("Hi there!", "greeting"),
        ("Good morning team", "greeting"),
        ("hey, how are you?", "greeting"),
        ("Thanks!", "thanks"),
        ("thank you so much for your help", "thanks"),
        ("ok thanks, bye", "thanks"),
        ("Perfect, that worked 🙏", "thanks"),
        ("Thanks, that worked great!", "thanks"),
        ("that works perfectly, thank you", "thanks"),
        ("Much appreciated.", "thanks"),
        ("bye", "goodbye"),
        ("That's all, have a nice day", "goodbye"),
        ("No thanks", "goodbye"),
        # Where the first clause does not start the message, or spans odd whitespace: the
        # quick check of the first clause must not turn these away.
        ("👋 hi", "greeting"),
        ("... thanks", "thanks"),
        ("  hello", "greeting"),
        ("\nbye", "goodbye"),
        ("Thank   you", "thanks"),
        ("hi👋there", "greeting"),
        ("thanks.bye", "thanks"),
        ("thanks and bye", "thanks"),
        ("hi - thanks", "greeting"),
        ("great, thanks", "thanks"),
    ],
)
def test_small_talk_is_recognised(text: str, kind: str) -> None:
    assert small_talk_kind(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "hi, I can't log in",
        "thanks, but the refund never arrived",
        "that worked great but my card is still blocked",
        "hello? is anyone there? my card was declined",
        "Good morning, how do I reset my password",
        "How are you charging me twice?",
        "bye bye money, you charged me twice",
        "my thanks card is broken",
        "",
        "hello " * 40,
        "how are you?",  # only a pleasantry: nothing to answer with
        "okay",
        "thanks,I can't log in",
    ],
)
def test_a_message_that_says_more_is_not_small_talk(text: str) -> None:
    assert small_talk_kind(text) is None


async def test_a_bare_agent_answers_greetings_and_thanks_without_a_person() -> None:
    """No knowledge, a strict threshold: before, "hello" was escalated to a reviewer."""
    llm = ScriptedLLM()
    agent = (
        await AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_config({"confidence": {"default_threshold": 0.95}})
        .build(llm)
    )
    hello = await agent.process_message("u1", "hello")
    thanks = await agent.process_message("u2", "Thanks a lot!")
    bye = await agent.process_message("u3", "ok bye!")
    assert (hello.content, hello.escalated) == (SMALL_TALK_REPLIES["greeting"], False)
    assert (thanks.content, thanks.escalated) == (SMALL_TALK_REPLIES["thanks"], False)
    assert (bye.content, bye.escalated) == (SMALL_TALK_REPLIES["goodbye"], False)
    assert hello.intent == SMALL_TALK
    # A thank-you that closes the user's open thread keeps the resolution acknowledgement.
    closing = await agent.process_message("u1", "thanks!")
    assert closing.transition == "resolution"
    assert not closing.escalated
    assert llm.calls == []  # no answer generation was paid for
    assert llm.json_calls == []  # nor an LLM classification


async def test_a_question_after_a_greeting_still_goes_through_the_pipeline() -> None:
    agent = await AgentFrameworkBuilder().with_intent_categories(CATEGORIES).build(ScriptedLLM())
    reply = await agent.process_message("u1", "hi, what is the airspeed of an unladen swallow")
    assert reply.intent != SMALL_TALK
    assert reply.escalated  # out of scope, as before
