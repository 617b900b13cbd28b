"""Thread detection on scripted conversations (SPEC 4.3)."""

from __future__ import annotations

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.inmemory import InMemoryThreadStore
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.stores import Session, ThreadStatus
from agentflow.kernel.threads import ThreadDecision, ThreadDetector, ThreadManager
from agentflow.kernel.threads import ThreadTransition as T
from tests.kernel.pipeline_fakes import CATEGORIES, FakeClock, ScriptedLLM

EMBEDDER = OfflineEmbedder()


class Conversation:
    """Drives a ThreadManager directly, one scripted message at a time."""

    def __init__(self, inactivity_seconds: float = 1800) -> None:
        self.clock = FakeClock()
        self.store = InMemoryThreadStore(clock=self.clock)
        self.manager = ThreadManager(
            self.store, ThreadDetector(inactivity_seconds=inactivity_seconds)
        )
        self.session = Session("s1", "u1", self.clock(), self.clock())

    async def say(self, text: str, intent: str = "GENERAL") -> ThreadDecision:
        return await self.manager.process(
            self.session,
            text,
            EMBEDDER.embed_one(text),
            intent=intent,
            out_of_scope=False,
            now=self.clock(),
        )

    async def status(self, thread_id: str) -> ThreadStatus:
        thread = await self.store.get("s1", thread_id)
        assert thread is not None
        return thread.status


async def test_thanks_resolves_the_login_thread_while_another_thread_is_active() -> None:
    chat = Conversation()

    login = await chat.say("My login is broken", "LOGIN")
    again = await chat.say("The login page still rejects my password", "LOGIN")
    s3 = await chat.say("Actually, different question about S3 buckets", "STORAGE")
    thanks = await chat.say("Thanks, that fixed the login!")

    assert login.transition is T.NEW_TOPIC
    assert again.transition in (T.CONTINUATION, T.FOLLOW_UP)
    assert again.thread is login.thread
    assert s3.transition is T.NEW_TOPIC
    assert s3.thread is not login.thread
    assert thanks.transition is T.RESOLUTION
    assert thanks.thread is login.thread
    assert await chat.status(login.thread.thread_id) is ThreadStatus.RESOLVED
    assert await chat.status(s3.thread.thread_id) is ThreadStatus.ACTIVE
    assert chat.session.active_thread_id == s3.thread.thread_id


async def test_clarification_and_escalation_stay_on_the_active_thread() -> None:
    chat = Conversation()
    start = await chat.say("My invoice shows the wrong amount", "BILLING")

    clarify = await chat.say("What do you mean by billing cycle?", "BILLING")
    urgent = await chat.say("This is urgent, we cannot pay our suppliers", "BILLING")

    assert clarify.transition is T.CLARIFICATION
    assert clarify.thread is start.thread
    assert urgent.transition is T.ESCALATION
    assert urgent.thread is start.thread
    assert urgent.thread.escalated


async def test_inactivity_abandons_the_old_thread_and_starts_a_new_one() -> None:
    chat = Conversation(inactivity_seconds=600)
    old = await chat.say("My login is broken", "LOGIN")
    chat.clock.advance(601)

    new = await chat.say("How do I export my invoices as PDF?", "BILLING")

    assert new.transition is T.NEW_TOPIC
    assert new.reason == "inactivity"
    assert await chat.status(old.thread.thread_id) is ThreadStatus.ABANDONED


async def test_returning_to_an_earlier_topic_follows_up_on_its_thread() -> None:
    chat = Conversation()
    login = await chat.say("My login password reset email never arrives", "LOGIN")
    await chat.say("Another question: how do I upload files to an S3 bucket?", "STORAGE")

    back = await chat.say("About the password reset email for my login: it never arrives", "LOGIN")

    assert back.thread is login.thread
    assert back.transition is T.FOLLOW_UP
    assert chat.session.active_thread_id == login.thread.thread_id


async def test_negated_or_questioning_fix_is_not_a_resolution() -> None:
    chat = Conversation()
    await chat.say("My login is broken", "LOGIN")

    still = await chat.say("It is still not fixed, the login fails", "LOGIN")
    question = await chat.say("Is the login fixed?", "LOGIN")

    assert still.transition is not T.RESOLUTION
    assert question.transition is not T.RESOLUTION


async def test_bare_thanks_closes_the_active_thread() -> None:
    chat = Conversation()
    await chat.say("My invoice is wrong", "BILLING")
    login = await chat.say("Separate issue: my login is broken", "LOGIN")

    thanks = await chat.say("Thanks!")

    assert thanks.transition is T.RESOLUTION
    assert thanks.thread is login.thread


async def test_short_reply_continues_and_dissimilar_other_intent_starts_a_topic() -> None:
    chat = Conversation()
    first = await chat.say("My login is broken", "LOGIN")

    short = await chat.say("yes", "LOGIN")
    other = await chat.say("Please send me a copy of last month's invoice", "BILLING")

    assert short.transition is T.CONTINUATION
    assert short.thread is first.thread
    assert other.transition is T.NEW_TOPIC


async def test_a_store_that_keeps_only_the_centroid_still_matches() -> None:
    chat = Conversation()
    login = await chat.say("My login is broken", "LOGIN")
    # A database store round-trips the centroid (read-only) but not its cached norm.
    assert login.thread is not None
    login.thread.centroid = login.thread.centroid.copy()
    login.thread.centroid.flags.writeable = False
    login.thread.centroid_norm = 0.0

    again = await chat.say("My login is broken again", "LOGIN")

    assert again.thread is login.thread
    assert again.similarity > 0.5


async def test_pipeline_reports_transitions_and_acknowledges_the_resolution() -> None:
    agent = await (
        AgentFrameworkBuilder().with_intent_categories(CATEGORIES).build(ScriptedLLM("Try this."))
    )
    script = [
        "My login is broken",
        "Actually, different question about S3 bucket access",
        "Thanks, that fixed the login!",
    ]
    replies = [await agent.process_message("u1", text) for text in script]

    assert [r.transition for r in replies] == ["new_topic", "new_topic", "resolution"]
    assert replies[2].thread_id == replies[0].thread_id
    assert not replies[2].escalated  # a thank-you needs no human
    assert "resolved" in replies[2].content
    threads = {t.thread_id: t.status for t in await agent.threads_of("u1")}
    assert threads[replies[0].thread_id] is ThreadStatus.RESOLVED
    assert threads[replies[1].thread_id] is ThreadStatus.ACTIVE
