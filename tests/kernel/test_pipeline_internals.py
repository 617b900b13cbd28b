"""Building blocks of the pipeline: deadlines, vector and case indexes, bounded stores."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from agentflow import AgentFrameworkBuilder, IntentResult
from agentflow.kernel.deadlines import Deadlines
from agentflow.kernel.inmemory import (
    ExpiringLRU,
    InMemoryKnowledgeStore,
    InMemoryMemoryStore,
    InMemoryThreadStore,
)
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.middleware import RateLimitMiddleware
from agentflow.kernel.stores import ConversationThread, KnowledgeDocument, MemoryCase, ThreadStatus
from agentflow.kernel.threads import ThreadTransition
from agentflow.kernel.vectors import VectorIndex, as_matrix
from tests.kernel.pipeline_fakes import CATEGORIES, FakeClock, ScriptedLLM

EMBEDDER = OfflineEmbedder()


async def test_deadline_turns_an_overrun_into_timeout_error() -> None:
    deadlines = Deadlines(resolution=0.01)

    with pytest.raises(TimeoutError):
        async with deadlines.scope(0.02):
            await asyncio.sleep(5)

    assert deadlines.active == 0


async def test_deadline_as_a_plain_with_block_times_out_the_same() -> None:
    deadlines = Deadlines(resolution=0.01)

    with pytest.raises(TimeoutError), deadlines.scope(0.02):
        await asyncio.sleep(5)
    with deadlines.scope(1.0):
        await asyncio.sleep(0)

    assert deadlines.active == 0


async def test_deadline_leaves_fast_work_and_outside_cancellation_alone() -> None:
    deadlines = Deadlines(resolution=0.01)

    async with deadlines.scope(1.0):
        await asyncio.sleep(0)

    async def cancelled_from_outside() -> None:
        async with deadlines.scope(10.0):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(cancelled_from_outside())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadlines.active == 0


def test_vector_index_returns_the_best_rows_in_order() -> None:
    index: VectorIndex[str] = VectorIndex()
    rows = as_matrix(np.eye(4, dtype=np.float32) + 0.1)
    for name, row in zip("abcd", rows, strict=True):
        index.add(name, row)
    query = as_matrix([[0.0, 1.0, 0.2, 0.0]])[0]

    found = index.search(query, 2)

    assert [name for name, _ in found] == ["b", "c"]
    assert found[0][1] > found[1][1]
    assert index.remove_where(lambda name: name == "b") == 1
    assert index.search(query, 1)[0][0] == "c"


async def test_knowledge_with_the_same_id_replaces_the_old_article() -> None:
    store = InMemoryKnowledgeStore(EMBEDDER)
    await store.add([KnowledgeDocument("kb-1", "Refunds", "Refunds take five days.")])
    await store.add([KnowledgeDocument("kb-1", "Refunds", "Refunds take two days.")])
    query = EMBEDDER.embed_one("how long do refunds take")

    found = await store.search("how long do refunds take", query, limit=5)

    assert len(store) == 1
    assert [item.text for item in found] == ["Refunds take two days."]


async def test_case_index_keeps_only_the_latest_cases_once_full() -> None:
    store = InMemoryMemoryStore(episodic_limit=3)
    texts = ["printer jams", "invoice missing", "password reset", "login loop", "vpn drops"]
    for i, text in enumerate(texts):
        vector = EMBEDDER.embed_one(text)
        await store.add_case(MemoryCase(str(i), "u1", text, "answer", "X", float(i), vector=vector))

    found = await store.search_cases(
        EMBEDDER.embed_one("printer jams"), user_id="u1", limit=5, include_shared=False
    )

    assert {case.question for case, _ in found} <= {"password reset", "login loop", "vpn drops"}
    assert len(found) <= 3


def test_expiring_lru_bounds_count_and_idle_time() -> None:
    clock = FakeClock()
    cache: ExpiringLRU[str, int] = ExpiringLRU(2, 10.0, clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.get("a")
    cache.put("c", 3)  # "b" was least recently used
    clock.advance(11)

    assert cache.get("b") is None
    assert cache.get("a") is None  # expired
    assert len(cache) == 1  # "c" is dropped only when looked up


async def test_thread_store_keeps_closed_threads_apart_and_bounded() -> None:
    store = InMemoryThreadStore(max_threads_per_session=3)
    for i in range(5):
        thread = ConversationThread(str(i), "s", "u", "topic", "X", float(i), float(i))
        if i < 4:
            thread.status = ThreadStatus.RESOLVED
        await store.save(thread)

    assert [t.thread_id for t in await store.list_threads("s", open_only=True)] == ["4"]
    assert [t.thread_id for t in await store.list_threads("s")] == ["2", "3", "4"]


async def test_at_most_max_open_threads_stay_open() -> None:
    agent = await AgentFrameworkBuilder().build(ScriptedLLM())
    agent.threads.max_open_threads = 2
    topics = ["My printer jams", "Another thing: my VPN drops", "Different question: taxes"]

    for text in topics:
        await agent.process_message("u1", text)

    threads = await agent.threads_of("u1")
    assert [t.status for t in threads] == [
        ThreadStatus.ABANDONED,
        ThreadStatus.ACTIVE,
        ThreadStatus.ACTIVE,
    ]


async def test_rate_limiter_forgets_idle_users() -> None:
    clock = FakeClock()
    limiter = RateLimitMiddleware(5, window_seconds=60, clock=clock)
    limiter._SWEEP_EVERY = 3
    await limiter.before_process("a", "m", {})
    await limiter.before_process("b", "m", {})
    clock.advance(61)
    await limiter.before_process("c", "m", {})  # third call: sweep

    assert limiter.tracked_users == 1


async def test_forget_user_erases_session_and_memory() -> None:
    agent = await AgentFrameworkBuilder().build(ScriptedLLM())
    await agent.process_message("u1", "My printer jams")

    await agent.forget_user("u1")

    assert await agent.session("u1") is None
    assert await agent.history("u1") == []
    assert await agent.memory.store.user_cases("u1") == []  # type: ignore[attr-defined]


async def test_a_custom_intent_classifier_replaces_the_trained_one() -> None:
    class Always:
        async def classify(self, text: str, history: Any = None) -> IntentResult:
            return IntentResult("BILLING", 0.99, False, method="custom")

    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_intent_classifier(Always())
        .build(ScriptedLLM())
    )

    reply = await agent.process_message("u1", "My login is broken")

    assert reply.intent == "BILLING"
    assert reply.metadata["intent_method"] == "custom"
    assert reply.transition == ThreadTransition.NEW_TOPIC.value


# ------------------------------------------------ hot-path shortcuts keep their meaning


def test_new_id_is_a_version_4_uuid_in_hex() -> None:
    import uuid

    from agentflow.kernel.stores import new_id

    ids = {new_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    for value in list(ids)[:200]:
        parsed = uuid.UUID(value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_new_ids_read_ahead_are_never_handed_out_by_a_forked_child_too() -> None:
    import os

    from agentflow.kernel.stores import new_id

    new_id()  # the parent now holds ids read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without running pytest's exit
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(300)}  # past the parent's whole read-ahead
    assert len(child) == 5
    assert not child & parent


def test_run_usage_starts_empty_and_sums_every_call() -> None:
    from agentflow.kernel.llm.base import LLMResponse, TokenUsage
    from agentflow.kernel.metering import RunState

    run, other = RunState("t1"), RunState("t2")
    assert run.usage == TokenUsage()
    assert other.usage == TokenUsage()
    run.record(LLMResponse("a", "m", "p", usage=TokenUsage(10, 2)))
    assert run.usage == TokenUsage(10, 2)
    assert other.usage == TokenUsage()
    run.record(LLMResponse("b", "m", "p", usage=TokenUsage(5, 1)))
    assert run.usage == TokenUsage(15, 3)
    assert run.calls == 2


def test_most_similar_thread_is_the_first_of_the_highest_similarity() -> None:
    from agentflow.kernel.threads import _most_similar

    threads = [ConversationThread(f"t{i}", "s", "u", "topic", "I", 0.0, 0.0) for i in range(3)]
    sims = {"t0": 0.2, "t1": 0.7, "t2": 0.7}
    assert _most_similar(threads, sims) == (threads[1], 0.7)
    assert _most_similar([], {}) == (None, 0.0)


def test_llm_call_metadata_is_redacted_by_type_scores_and_nulls_kept() -> None:
    from agentflow.kernel.guardrails import PIIRedactor
    from agentflow.kernel.metering import GuardedProvider

    guarded = GuardedProvider(ScriptedLLM(), redactor=PIIRedactor())
    metadata = {
        "question": "card 4111 1111 1111 1111",
        "context": [{"text": "mail ann@example.com", "score": 0.5, "id": None, "ok": True}],
        "n": 4111111111111111,  # a card number as an int is still a card number
        "pair": ("ann@example.com", 2.5),
    }

    assert guarded.redact_value(metadata) == {
        "question": "card [CARD]",
        "context": [{"text": "mail [EMAIL]", "score": 0.5, "id": None, "ok": True}],
        "n": "[CARD]",
        "pair": ["[EMAIL]", 2.5],
    }


def test_cost_totals_add_up_per_scope_across_calls() -> None:
    from agentflow.kernel.costs import CostTracker
    from agentflow.kernel.llm.base import TokenUsage

    tracker = CostTracker()
    tracker.record(model="m", usage=TokenUsage(10, 2), cost_usd=0.01, agent_id="a1")
    tracker.record(model="m", usage=TokenUsage(5, 1), cost_usd=0.02, agent_id="a1")
    tracker.record(model="m", usage=TokenUsage(1, 1), cost_usd=0.04, agent_id="a2")

    assert tracker.totals("agent:a1").calls == 2
    assert tracker.totals("agent:a1").usage == TokenUsage(15, 3)
    assert tracker.totals("agent:a1").cost_usd == pytest.approx(0.03)
    assert tracker.totals("total").calls == 3
    assert tracker.totals("total").cost_usd == pytest.approx(0.07)


class _BrokenThreadStore(InMemoryThreadStore):
    """A thread store that cannot list a session's threads (a database that is down)."""

    async def list_threads(
        self, session_id: str, *, open_only: bool = False
    ) -> list[ConversationThread]:
        raise ConnectionError("thread store unavailable")


async def test_a_thread_store_failure_degrades_or_fails_a_strict_pipeline() -> None:
    from agentflow.kernel.pipeline import PersistenceError

    lenient = await (
        AgentFrameworkBuilder().with_stores(threads=_BrokenThreadStore()).build(ScriptedLLM())
    )
    strict = await (
        AgentFrameworkBuilder()
        .with_stores(threads=_BrokenThreadStore())
        .with_strict_persistence()
        .build(ScriptedLLM())
    )

    reply = await lenient.process_message("u1", "my printer jams")
    with pytest.raises(PersistenceError) as failed:
        await strict.process_message("u1", "my printer jams")

    assert reply.metadata["degraded"] == [
        {"stage": "thread", "error": "ConnectionError: thread store unavailable"}
    ]
    assert (reply.thread_id, reply.transition, reply.metadata["thread_reason"]) == (
        "",
        "continuation",
        "",
    )
    assert reply.content == "Scripted answer."
    assert failed.value.stage == "thread"
