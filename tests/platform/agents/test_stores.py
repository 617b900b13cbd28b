"""Django-backed kernel stores (SPEC 4.4): round trips, bounds, anonymity, tenant isolation."""

from __future__ import annotations

import dataclasses
import time
import uuid
from datetime import UTC

import numpy as np
import pytest
from django.db import IntegrityError

from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.stores import ConversationThread, MemoryCase, Session, ThreadStatus
from agentflow.models import Agent, AgentSession, Message, Thread
from agentflow.models import MemoryCase as MemoryCaseRow
from agentflow.stores import (
    DjangoMemoryStore,
    DjangoSessionStore,
    DjangoThreadStore,
    decode_vector,
    encode_vector,
    to_datetime,
    to_timestamp,
)
from tenants.context import tenant_scope
from tenants.scoping import TenantScopeMissing
from tests.platform.agents import make_agent, make_tenant
from tests.platform.api.test_sql_budget import captured_sql

pytestmark = pytest.mark.django_db(transaction=True)
EMBEDDER = OfflineEmbedder()
NOW = 1_750_000_000.25


def new_session(user_id: str = "u1", now: float = NOW) -> Session:
    return Session(session_id=uuid.uuid4().hex, user_id=user_id, created_at=now, last_active=now)


def new_thread(session: Session, text: str, now: float = NOW) -> ConversationThread:
    return ConversationThread(
        thread_id=uuid.uuid4().hex,
        session_id=session.session_id,
        user_id=session.user_id,
        topic=text,
        intent="LOGIN",
        created_at=now,
        last_active=now,
        message_count=1,
        centroid=EMBEDDER.embed_one(text).copy(),
        keywords={"login", "password"},
    )


def case(user_id: str, question: str, *, answer: str = "Reset it.", when: float = NOW,
         resolved: bool = False, thread_id: str | None = None) -> MemoryCase:  # fmt: skip
    return MemoryCase(
        case_id=uuid.uuid4().hex,
        user_id=user_id,
        question=question,
        answer=answer,
        intent="LOGIN",
        created_at=when,
        thread_id=thread_id,
        resolved=resolved,
        effectiveness=1.0 if resolved else 0.0,
        vector=EMBEDDER.embed_one(question),
    )


def test_vectors_survive_the_base64_round_trip_exactly() -> None:
    vector = EMBEDDER.embed_one("my login is broken")
    decoded = decode_vector(encode_vector(vector))
    assert decoded is not None
    assert np.array_equal(decoded, vector)
    assert decode_vector("not base64!") is None


async def test_session_round_trip_keeps_every_field() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        store = DjangoSessionStore(agent.id)
        assert await store.get("u1") is None

        session = new_session()
        session.active_thread_id = "t" * 32
        session.message_count = 3
        session.metadata = {"locale": "fr", "plan": {"tier": "pro"}}
        await store.save(session)
        loaded = await store.get("u1")

        assert loaded is not None
        assert uuid.UUID(loaded.session_id) == uuid.UUID(session.session_id)
        assert session.session_id == loaded.session_id, "save normalises the id as get gives it"
        assert (loaded.user_id, loaded.active_thread_id, loaded.message_count) == (
            "u1",
            "t" * 32,
            3,
        )
        assert loaded.metadata == {"locale": "fr", "plan": {"tier": "pro"}}
        assert loaded.created_at == pytest.approx(NOW, abs=1e-6)
        assert loaded.last_active == pytest.approx(NOW, abs=1e-6)

        loaded.active_thread_id = None
        loaded.last_active = NOW + 60
        await store.save(loaded)
        again = await store.get("u1")
        assert again is not None
        assert again.active_thread_id is None
        assert again.last_active == pytest.approx(NOW + 60, abs=1e-6)
        assert await AgentSession.objects.acount() == 1

        await store.delete("u1")
        assert await store.get("u1") is None


async def test_a_second_new_session_of_the_same_user_adopts_the_first_row() -> None:
    # Two workers start the same new user's first messages, each with its own session id.
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        store = DjangoSessionStore(agent.id)
        first, second = new_session(), new_session()
        await store.save(first)
        await store.save(second)

        assert second.session_id == first.session_id
        assert await AgentSession.objects.acount() == 1


async def test_thread_round_trip_keeps_centroid_keywords_and_status() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        threads = DjangoThreadStore(agent.id)
        session = new_session()
        # The pipeline saves a new thread before the session: the store creates the row.
        login = new_thread(session, "My login is broken")
        await threads.save(login)
        await DjangoSessionStore(agent.id).save(session)
        assert login.session_id == session.session_id

        loaded = await threads.get(session.session_id, login.thread_id)
        assert loaded is not None
        assert loaded.centroid is not None
        assert login.centroid is not None
        assert np.array_equal(loaded.centroid, login.centroid)
        assert loaded.centroid.dtype == np.float32
        assert loaded.keywords == {"login", "password"}
        assert (loaded.topic, loaded.intent, loaded.user_id) == (
            "My login is broken",
            "LOGIN",
            "u1",
        )
        assert loaded.status is ThreadStatus.ACTIVE
        assert loaded.resolution is None
        assert loaded.created_at == pytest.approx(NOW, abs=1e-6)

        loaded.status = ThreadStatus.RESOLVED
        loaded.resolution = "Thanks, that fixed the login!"
        loaded.escalated = True
        loaded.message_count = 2
        await threads.save(loaded)
        other = new_thread(session, "How do I upload files to S3?", now=NOW + 5)
        await threads.save(other)

        everything = await threads.list_threads(session.session_id)
        open_only = await threads.list_threads(session.session_id, open_only=True)
        assert [t.thread_id for t in everything] == [login.thread_id, other.thread_id]
        assert [t.thread_id for t in open_only] == [other.thread_id]
        resolved = everything[0]
        assert resolved.status is ThreadStatus.RESOLVED
        assert resolved.escalated
        assert resolved.resolution == "Thanks, that fixed the login!"
        assert resolved.message_count == 2
        assert await threads.get(uuid.uuid4().hex, login.thread_id) is None
        assert await threads.list_threads("not-a-uuid") == []


async def test_a_thread_of_an_existing_session_is_saved_in_one_statement() -> None:
    """The run path: the 202 made the session row, so a new thread is one INSERT and a
    changed one one UPDATE (the same upsert); its session and creation time never move."""
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        session = new_session()
        await DjangoSessionStore(agent.id).save(session)
        threads = DjangoThreadStore(agent.id)
        login = new_thread(session, "My login is broken")
        with captured_sql() as inserted:
            await threads.save(login)
        login.topic, login.message_count, login.last_active = "Login fixed", 2, NOW + 30
        login.created_at = NOW + 30  # a creation time is kept from the first save
        with captured_sql() as updated:
            await threads.save(login)
        assert (len(inserted), len(updated)) == (1, 1), [*inserted, *updated]

        row = await Thread.objects.aget(pk=login.thread_id)
        assert (row.topic, row.message_count) == ("Login fixed", 2)
        assert to_timestamp(row.created_at) == pytest.approx(NOW, abs=1e-6)
        assert to_timestamp(row.last_active) == pytest.approx(NOW + 30, abs=1e-6)

        # The same thread id saved under another session of the agent is refused, as an
        # insert of a taken id is: it never moves the thread to that session.
        other = new_session("u2")
        await DjangoSessionStore(agent.id).save(other)
        stolen = dataclasses.replace(login, session_id=other.session_id, user_id="u2")
        with pytest.raises(IntegrityError):
            await threads.save(stolen)
        row = await Thread.objects.aget(pk=login.thread_id)
        assert str(row.session_id) == str(uuid.UUID(session.session_id))


async def test_open_threads_listed_are_bounded_to_the_most_recent() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        threads = DjangoThreadStore(agent.id, max_open_threads=3)
        session = new_session()
        made = []
        for i in range(5):
            thread = new_thread(session, f"topic number {i}", now=NOW + i)
            await threads.save(thread)
            made.append(thread.thread_id)

        listed = await threads.list_threads(session.session_id, open_only=True)
        assert [t.thread_id for t in listed] == made[:1:-1]


async def test_recent_messages_come_from_the_message_table_in_spoken_order() -> None:
    tenant = await make_tenant("acme")
    clock = [NOW]
    with tenant_scope(tenant.id):
        agent = await make_agent()
        session = new_session()
        await DjangoSessionStore(agent.id).save(session)
        memory = DjangoMemoryStore(agent.id, short_term_ttl_seconds=3600, clock=lambda: clock[0])
        # append_messages stores nothing: the run service writes the Message rows.
        await memory.append_messages(session.session_id, [ChatMessage("user", "hi")])
        assert await Message.objects.acount() == 0

        row = await AgentSession.objects.aget(id=session.session_id)
        # One run's two rows are written in one transaction and share its now().
        for index in range(3):
            await Message.objects.abulk_create(
                [
                    Message(tenant_id=tenant.id, session=row, role="assistant", content=f"a{index}",
                            created_at=to_datetime(NOW - 100 + index)),
                    Message(tenant_id=tenant.id, session=row, role="user", content=f"q{index}",
                            created_at=to_datetime(NOW - 100 + index)),
                ]
            )  # fmt: skip

        history = await memory.recent_messages(session.session_id, 4)
        assert [(m.role, m.content) for m in history] == [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
        ]
        clock[0] = NOW + 3600  # the newest message is now older than the TTL
        assert await memory.recent_messages(session.session_id, 4) == []
        assert await memory.recent_messages("not-a-uuid", 4) == []


async def test_episodic_memory_keeps_the_newest_cases_of_each_user() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        memory = DjangoMemoryStore(agent.id, episodic_limit=5)
        await memory.add_case(case("bob", "bob's only question"))
        alice = [case("alice", f"question number {i}", when=NOW + i) for i in range(8)]
        for item in alice:
            await memory.add_case(item)

        kept = await memory.user_cases("alice")
        assert [c.case_id for c in kept] == [c.case_id for c in alice[3:]]
        assert kept[0].vector is not None
        assert alice[3].vector is not None
        assert np.array_equal(kept[0].vector, alice[3].vector)
        assert kept[0].created_at == pytest.approx(NOW + 3, abs=1e-6)
        assert len(await memory.user_cases("bob")) == 1, "another user's cases are not trimmed"
        with pytest.raises(ValueError, match="belong to a user"):
            await memory.add_case(dataclasses.replace(case("x", "q"), user_id=None))


async def test_other_users_cases_are_only_seen_resolved_and_anonymised() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        memory = DjangoMemoryStore(agent.id)
        question = "My login fails for alice@example.com since the password reset"
        open_case = case("alice", question)
        await memory.add_case(open_case)
        vector = EMBEDDER.embed_one("login fails after password reset")

        assert await memory.search_cases(vector, user_id="bob", limit=5) == []
        own = await memory.search_cases(vector, user_id="alice", limit=5)
        assert [(c.case_id, c.user_id, c.question) for c, _ in own] == [
            (open_case.case_id, "alice", question)
        ]

        thread_id = uuid.uuid4().hex
        solved = case("alice", question, answer="Mail alice@example.com a new link.",
                      thread_id=thread_id)  # fmt: skip
        await memory.add_case(solved)
        assert await memory.resolve_thread("alice", thread_id, 0.9) == 1
        assert await memory.resolve_thread("alice", thread_id, 0.9) == 0

        seen = await memory.search_cases(vector, user_id="bob", limit=5)
        assert len(seen) == 1
        shared, score = seen[0]
        assert shared.user_id is None
        assert "alice@example.com" not in shared.question + shared.answer
        assert "[EMAIL]" in shared.question
        assert "[EMAIL]" in shared.answer
        assert 0.0 < score <= 1.0
        assert shared.resolved
        assert shared.effectiveness == pytest.approx(0.9)
        assert await memory.search_cases(vector, user_id="bob", limit=5, include_shared=False) == []
        assert await memory.search_cases(np.zeros(384, np.float32), user_id="alice", limit=5) == []

        await memory.forget_user("alice")
        assert await memory.search_cases(vector, user_id="bob", limit=5) == []


async def test_cases_resolved_by_another_process_are_shared_after_the_ttl() -> None:
    tenant = await make_tenant("acme")
    clock = [NOW]
    with tenant_scope(tenant.id):
        agent = await make_agent()
        here = DjangoMemoryStore(agent.id, shared_ttl_seconds=30, clock=lambda: clock[0])
        elsewhere = DjangoMemoryStore(agent.id)  # another worker's store
        vector = EMBEDDER.embed_one("login broken")
        assert await here.search_cases(vector, user_id="bob", limit=3) == []

        await elsewhere.add_case(case("alice", "my login is broken", resolved=True))
        assert await here.search_cases(vector, user_id="bob", limit=3) == []
        clock[0] += 31
        assert len(await here.search_cases(vector, user_id="bob", limit=3)) == 1

        # What this store resolves itself is shared at once.
        thread_id = uuid.uuid4().hex
        await here.add_case(case("carol", "login broken again", thread_id=thread_id))
        await here.resolve_thread("carol", thread_id, 1.0)
        assert len(await here.search_cases(vector, user_id="bob", limit=3)) == 2


async def test_a_store_in_tenant_b_scope_never_returns_tenant_a_rows() -> None:
    tenant_a, tenant_b = await make_tenant("tenant-a"), await make_tenant("tenant-b")
    with tenant_scope(tenant_a.id):
        agent_a = await make_agent()
        session = new_session("same-user")
        thread = new_thread(session, "My login is broken")
        await DjangoThreadStore(agent_a.id).save(thread)
        await DjangoSessionStore(agent_a.id).save(session)
        await DjangoMemoryStore(agent_a.id).add_case(
            case("same-user", "login broken", resolved=True)
        )

    vector = EMBEDDER.embed_one("login broken")
    with tenant_scope(tenant_b.id):
        # Tenant B guessing or replaying tenant A's agent, session and thread ids.
        assert await DjangoSessionStore(agent_a.id).get("same-user") is None
        threads = DjangoThreadStore(agent_a.id)
        assert await threads.get(session.session_id, thread.thread_id) is None
        assert await threads.list_threads(session.session_id) == []
        memory = DjangoMemoryStore(agent_a.id)
        assert await memory.search_cases(vector, user_id="same-user", limit=5) == []
        assert await memory.search_cases(vector, user_id="other", limit=5) == []
        assert await memory.user_cases("same-user") == []
        assert await memory.resolve_thread("same-user", thread.thread_id, 1.0) == 0
        await DjangoSessionStore(agent_a.id).delete("same-user")
        await memory.forget_user("same-user")
        # Writes naming A's agent are refused instead of making B rows pointing at it.
        with pytest.raises(Agent.DoesNotExist):
            await DjangoSessionStore(agent_a.id).save(new_session("intruder"))
        with pytest.raises(Agent.DoesNotExist):
            await DjangoThreadStore(agent_a.id).save(new_thread(new_session("intruder"), "hi"))
        with pytest.raises(Agent.DoesNotExist):
            await memory.add_case(case("intruder", "login broken"))
        assert await AgentSession.objects.acount() == 0
        assert await MemoryCaseRow.objects.acount() == 0

    with tenant_scope(tenant_a.id):  # B's deletes touched nothing of A
        assert await AgentSession.objects.acount() == 1
        assert await Thread.objects.acount() == 1
        assert await MemoryCaseRow.objects.acount() == 1


async def test_stores_raise_outside_any_tenant_scope() -> None:
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
    with pytest.raises(TenantScopeMissing):
        await DjangoSessionStore(agent.id).get("u1")
    with pytest.raises(TenantScopeMissing):
        await DjangoThreadStore(agent.id).list_threads(uuid.uuid4().hex)
    with pytest.raises(TenantScopeMissing):
        await DjangoMemoryStore(agent.id).search_cases(
            EMBEDDER.embed_one("login"), user_id="u1", limit=3
        )
    with pytest.raises(TenantScopeMissing):
        await DjangoSessionStore(agent.id).save(new_session())


def test_timestamps_are_utc_datetimes() -> None:
    moment = to_datetime(NOW)
    assert moment.tzinfo is UTC
    assert to_timestamp(moment) == pytest.approx(NOW, abs=1e-6)
    assert abs(to_timestamp(to_datetime(time.time())) - time.time()) < 1


async def test_a_found_case_comes_back_exactly_as_stored_with_its_cosine_score() -> None:
    """The memory search is one hand-written statement: every field of the stored case,
    its float32 vector bit for bit, and the score is the cosine similarity to the query."""
    tenant = await make_tenant("acme")
    with tenant_scope(tenant.id):
        agent = await make_agent()
        memory = DjangoMemoryStore(agent.id)
        stored = case("alice", "refund for order 42", thread_id="t-1")
        await memory.add_case(stored)
        query = EMBEDDER.embed_one("refund my order")

        [(found, score)] = await memory.search_cases(query, user_id="alice", limit=3)

        assert found.vector is not None
        assert stored.vector is not None
        assert found.vector.dtype == np.float32
        assert np.array_equal(found.vector, np.asarray(stored.vector, dtype=np.float32))
        assert dataclasses.replace(found, vector=None) == dataclasses.replace(stored, vector=None)
        a, b = np.asarray(query, dtype=np.float64), found.vector.astype(np.float64)
        assert score == pytest.approx(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))


async def test_session_reads_and_updates_stay_in_the_current_tenant() -> None:
    """A session saved and read through the store's own statements: another tenant's scope
    neither reads it nor updates it (its save there makes no row of the first tenant)."""
    acme, globex = await make_tenant("acme"), await make_tenant("globex")
    with tenant_scope(acme.id):
        agent = await make_agent()
        session = new_session("u1")
        session.metadata = {"lang": "fr", "n": 2}
        await DjangoSessionStore(agent.id).save(session)
    with tenant_scope(globex.id):
        assert await DjangoSessionStore(agent.id).get("u1") is None
        intruder = dataclasses.replace(session, message_count=99, metadata={"x": 1})
        with pytest.raises(Agent.DoesNotExist):
            await DjangoSessionStore(agent.id).save(intruder)
    with tenant_scope(acme.id):
        again = await DjangoSessionStore(agent.id).get("u1")
    assert again is not None
    assert (again.message_count, again.metadata) == (0, {"lang": "fr", "n": 2})
