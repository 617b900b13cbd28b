"""Sessions: TTL, bounded count with LRU eviction, per-user ordering, cross-user parallelism."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow import AgentFrameworkBuilder
from agentflow.kernel.inmemory import InMemorySessionStore
from agentflow.kernel.sessions import SessionManager
from tests.kernel.pipeline_fakes import FakeClock, ScriptedLLM, yield_a_few


async def test_session_expires_after_ttl_of_inactivity() -> None:
    clock = FakeClock()
    manager = SessionManager(InMemorySessionStore(ttl_seconds=60, clock=clock), clock=clock)

    session, created = await manager.get_or_create("u1")
    await manager.save(session)
    clock.advance(59)
    again, created_again = await manager.get_or_create("u1")
    await manager.save(again)
    clock.advance(61)
    fresh, created_fresh = await manager.get_or_create("u1")

    assert created
    assert not created_again
    assert created_fresh
    assert again.session_id == session.session_id
    assert fresh.session_id != session.session_id


async def test_session_count_is_bounded_least_recently_used_goes_first() -> None:
    clock = FakeClock()
    store = InMemorySessionStore(max_sessions=2, clock=clock)
    manager = SessionManager(store, clock=clock)
    for user in ("a", "b"):
        session, _ = await manager.get_or_create(user)
        await manager.save(session)
    await manager.get_or_create("a")  # touching "a" makes "b" the least recently used
    session_c, _ = await manager.get_or_create("c")
    await manager.save(session_c)

    assert len(store) == 2
    assert await store.get("a") is not None
    assert await store.get("b") is None
    assert await store.get("c") is not None


async def test_pipeline_session_expiry_starts_a_new_session() -> None:
    clock = FakeClock()
    agent = await (
        AgentFrameworkBuilder()
        .with_config({"session": {"ttl_seconds": 100}})
        .with_clock(clock)
        .build(ScriptedLLM())
    )

    first = await agent.process_message("u1", "hello")
    clock.advance(50)
    second = await agent.process_message("u1", "hello again")
    clock.advance(101)
    third = await agent.process_message("u1", "back again")

    assert first.session_id == second.session_id != third.session_id
    assert third.metadata["new_session"] is True
    # Short-term memory belongs to the session: the expired one's messages are gone.
    assert [m.content for m in await agent.history("u1")] == ["back again", "Scripted answer."]


def _recording_llm(events: list[tuple[str, str]], gate: Any = None) -> ScriptedLLM:
    async def on_call(call: dict[str, Any]) -> None:
        message = call["metadata"]["question"]
        events.append(("start", message))
        if gate is not None:
            await gate(message)
        await yield_a_few(10)
        events.append(("end", message))

    return ScriptedLLM("ok", on_call=on_call)


async def test_messages_of_one_user_are_processed_one_at_a_time_in_order() -> None:
    events: list[tuple[str, str]] = []
    agent = await AgentFrameworkBuilder().build(_recording_llm(events))

    replies = await asyncio.gather(
        *(agent.process_message("same-user", f"message {i}") for i in range(4))
    )

    assert events == [(kind, f"message {i}") for i in range(4) for kind in ("start", "end")]
    assert len({r.session_id for r in replies}) == 1
    assert agent.sessions.locked_users == 0  # locks are dropped when nobody waits


async def test_a_waiter_cancelled_in_the_queue_leaves_the_order_of_the_others() -> None:
    manager = SessionManager(InMemorySessionStore())
    order: list[str] = []

    async def turn(name: str, hold: asyncio.Event | None = None) -> None:
        await manager.acquire("u1")
        try:
            order.append(name)
            if hold is not None:
                await hold.wait()
        finally:
            manager.release("u1")

    assert manager.try_acquire("solo")
    assert not manager.try_acquire("solo")
    manager.release("solo")
    hold = asyncio.Event()
    first = asyncio.ensure_future(turn("first", hold))
    await yield_a_few(3)  # the first holds the turn without a lock: nobody waited yet
    second, third = asyncio.ensure_future(turn("second")), asyncio.ensure_future(turn("third"))
    await yield_a_few(3)
    second.cancel()
    hold.set()
    await asyncio.gather(first, third)

    assert second.cancelled()
    assert order == ["first", "third"]
    assert manager.locked_users == 0


async def test_different_users_are_processed_concurrently() -> None:
    events: list[tuple[str, str]] = []
    both_started = asyncio.Event()
    started: set[str] = set()

    async def gate(message: str) -> None:
        # Each user's LLM call waits until the other user's call has started too: this can
        # only finish if the two users run at the same time.
        started.add(message)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=5)

    agent = await AgentFrameworkBuilder().build(_recording_llm(events, gate))

    await asyncio.gather(
        agent.process_message("alice", "from alice"), agent.process_message("bob", "from bob")
    )

    assert [kind for kind, _ in events[:2]] == ["start", "start"]


async def test_a_failing_message_releases_the_user_lock() -> None:
    agent = await AgentFrameworkBuilder().build(ScriptedLLM())

    class Boom(Exception):
        """A failure in the middle of a run."""

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise Boom

    original = agent._stages
    agent._stages = explode
    with pytest.raises(Boom):
        await agent.process_message("u1", "where is my parcel")
    agent._stages = original

    assert agent.sessions.locked_users == 0
    reply = await asyncio.wait_for(agent.process_message("u1", "where is my parcel"), timeout=5)
    assert reply.content == "Scripted answer."
