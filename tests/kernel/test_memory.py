"""Memory (SPEC 4.4): short-term with TTL, bounded episodic memory, anonymised sharing."""

from __future__ import annotations

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.inmemory import InMemoryMemoryStore
from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.memory import MemoryManager
from tests.kernel.pipeline_fakes import CATEGORIES, FakeClock, ScriptedLLM

EMBEDDER = OfflineEmbedder()
REDACTOR = PIIRedactor()
ALICE_SECRET = "alice@example.com"
ALICE_CARD = "4111 1111 1111 1111"


def manager(store: InMemoryMemoryStore, recall_limit: int = 5) -> MemoryManager:
    return MemoryManager(
        store, anonymise=lambda text: REDACTOR.redact(text).text, recall_limit=recall_limit
    )


async def remember(
    memory: MemoryManager,
    user: str,
    question: str,
    answer: str,
    thread: str = "t1",
    now: float = 0.0,
) -> None:
    await memory.remember(
        session_id=f"s-{user}",
        user_id=user,
        question=question,
        shown=answer,
        answer=answer,
        intent="BILLING",
        thread_id=thread,
        vector=EMBEDDER.embed_one(question),
        now=now,
    )


async def test_user_b_only_ever_sees_user_a_cases_anonymised() -> None:
    memory = manager(InMemoryMemoryStore())
    question = f"Refund to card {ALICE_CARD} please, reply to {ALICE_SECRET}"
    answer = f"Refunded {ALICE_CARD}; receipt sent to {ALICE_SECRET}"
    await remember(memory, "alice", question, answer)
    await memory.resolve_thread("alice", "t1")
    vector = EMBEDDER.embed_one("Please refund to my card")

    own = await memory.similar_cases("alice", vector)
    seen_by_bob = await memory.similar_cases("bob", vector)
    recalled_by_bob = await memory.recall("bob", vector)

    assert own[0][0].user_id == "alice"
    assert ALICE_SECRET in own[0][0].question
    assert len(seen_by_bob) == 1
    case = seen_by_bob[0][0]
    assert case.user_id is None
    text = f"{case.question} {case.answer} {recalled_by_bob}"
    assert ALICE_SECRET not in text
    assert ALICE_CARD not in text
    assert "alice" not in text
    assert "[EMAIL]" in case.question
    assert "[CARD]" in case.answer
    # The store's own record is untouched: anonymisation makes copies.
    assert ALICE_SECRET in (await memory.similar_cases("alice", vector))[0][0].question


async def test_unresolved_cases_stay_private() -> None:
    memory = manager(InMemoryMemoryStore())
    await remember(memory, "alice", "My invoice is wrong", "We will check it")

    assert await memory.similar_cases("bob", EMBEDDER.embed_one("My invoice is wrong")) == []


async def test_episodic_memory_keeps_the_last_n_cases_per_user() -> None:
    store = InMemoryMemoryStore(episodic_limit=3)
    memory = manager(store)
    for i in range(5):
        await remember(memory, "u1", f"question number {i}", f"answer {i}", now=float(i))

    cases = await store.user_cases("u1")

    assert [c.question for c in cases] == [
        "question number 2",
        "question number 3",
        "question number 4",
    ]


async def test_short_term_memory_is_bounded_and_expires() -> None:
    clock = FakeClock()
    store = InMemoryMemoryStore(short_term_messages=4, ttl_seconds=60, clock=clock)
    await store.append_messages("s1", [ChatMessage("user", f"m{i}") for i in range(6)])

    recent = await store.recent_messages("s1", 10)
    clock.advance(61)
    expired = await store.recent_messages("s1", 10)

    assert [m.content for m in recent] == ["m2", "m3", "m4", "m5"]
    assert expired == []


async def test_forget_user_removes_shared_cases_too() -> None:
    memory = manager(InMemoryMemoryStore())
    await remember(memory, "alice", "My invoice is wrong", "Corrected")
    await memory.resolve_thread("alice", "t1")
    vector = EMBEDDER.embed_one("My invoice is wrong")
    assert await memory.similar_cases("bob", vector)

    await memory.forget_user("alice")

    assert await memory.similar_cases("bob", vector) == []
    assert await memory.similar_cases("alice", vector) == []


async def test_pipeline_never_sends_another_users_raw_memory_to_the_llm() -> None:
    llm = ScriptedLLM(lambda messages, meta: "Refund issued.", confidence=0.95)
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        # Redaction at the provider door is off here: only anonymisation protects Alice.
        .with_config({"guardrails": {"redact_pii": False}})
        .build(llm)
    )
    await agent.process_message(
        "alice", f"I was charged twice on card {ALICE_CARD}, mail {ALICE_SECRET}"
    )
    await agent.process_message("alice", "Thanks, that fixed it!")
    llm.calls.clear()  # from here on, only what Bob's message sends
    llm.json_calls.clear()

    await agent.process_message("bob", "I was charged twice on my card")

    memory_items = [
        item for item in llm.calls[-1]["metadata"]["context"] if item["kind"] == "memory"
    ]
    assert memory_items, "Alice's resolved case should be recalled, anonymised"
    assert ALICE_CARD not in llm.sent_text
    assert ALICE_SECRET not in llm.sent_text
    assert "alice" not in llm.sent_text
