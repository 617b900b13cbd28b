"""Django-backed implementations of the kernel's store Protocols (SPEC 4.4).

One store instance serves one platform Agent and may be shared by every request and task
of the worker process: it holds no tenant and no rows. Every query goes through the
tenant-scoped managers, so a store used inside tenant B's scope sees only tenant B's rows
(an agent id of tenant A finds nothing) and raises `TenantScopeMissing` outside any scope.

Mapping of the kernel records:

* `Session` ↔ `AgentSession` (one row per agent and end user, kept for good; the kernel's
  metadata in `state`). A session does not expire: what the TTL bounds is the short-term
  memory, i.e. how old the conversation may be for its messages to come back as history.
* `ConversationThread` ↔ `Thread`; the detector's centroid (float32, base64) and salient
  keywords live in `Thread.state`.
* short-term messages ↔ `Message` rows, which the run service writes itself;
  `append_messages` is therefore a no-op.
* `MemoryCase` ↔ `MemoryCase` rows (pgvector embedding), newest `episodic_limit` kept per
  user; other users' cases come back anonymised.
* knowledge ↔ `KnowledgeChunk` rows, searched per agent by `agentflow.knowledge`.

Kernel timestamps are epoch seconds; the database keeps timezone-aware UTC datetimes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.db import IntegrityError, connection, transaction

from agentflow import knowledge as kb
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import ConversationThread, MemoryCase, Session, ThreadStatus
from agentflow.kernel.stores import KnowledgeDocument as KernelDocument
from agentflow.kernel.vectors import Vector
from agentflow.models import Agent, AgentSession, Thread
from agentflow.models import MemoryCase as MemoryCaseRow
from agentflow.vector_search import vector_literal
from tenants.scoping import require_tenant_id

__all__ = [
    "DjangoKnowledgeStore",
    "DjangoMemoryStore",
    "DjangoSessionStore",
    "DjangoThreadStore",
    "decode_vector",
    "encode_vector",
    "to_datetime",
    "to_timestamp",
]

AgentId = uuid.UUID | str
Clock = Callable[[], float]


def to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def to_timestamp(moment: datetime) -> float:
    return moment.timestamp()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# An agent's tenant never changes: once seen in a scope, writes there need no query.
_agent_tenants: dict[str, int] = {}
_AGENT_TENANTS_MAX = 10_000


def _require_agent(agent_id: AgentId) -> None:
    """New rows name the agent by id: refuse an agent the current tenant cannot see.

    Reads are filtered by tenant and agent and so find nothing; an insert is not, and
    would otherwise make a row of this tenant that points at another tenant's agent.
    """
    tenant_id = require_tenant_id()
    key = str(agent_id)
    if _agent_tenants.get(key) == tenant_id:
        return
    if not Agent.objects.filter(id=agent_id).exists():
        raise Agent.DoesNotExist(f"agent {agent_id} not found")
    if len(_agent_tenants) >= _AGENT_TENANTS_MAX:
        _agent_tenants.clear()
    _agent_tenants[key] = tenant_id


# ------------------------------------------------------------------------------ sessions


def _adopt_session(
    agent_id: AgentId, session_id: uuid.UUID, user_id: str, created_at: float
) -> uuid.UUID:
    """Create the user's session row with this id, or return the id of the existing one.

    Two workers may start the same new user's first messages at once, each with its own
    kernel session id; `(agent, user_id)` is unique, so the second one adopts the first
    one's row. The savepoint keeps a caller's transaction usable after the IntegrityError.
    """
    _require_agent(agent_id)
    try:
        with transaction.atomic():
            AgentSession.objects.create(
                id=session_id,
                agent_id=agent_id,
                user_id=user_id,
                created_at=to_datetime(created_at),
                last_active=to_datetime(created_at),
            )
        return session_id
    except IntegrityError:
        existing = AgentSession.objects.filter(agent_id=agent_id, user_id=user_id).first()
        if existing is None:
            raise  # not the (agent, user) race: something else is wrong
        return existing.id


_adopt_session_async = sync_to_async(_adopt_session)


# The session store's read and update, run for every message: written once here instead of
# compiled by the ORM per call. The tenant is always a parameter (the current scope's).
_GET_SESSION_SQL = """
SELECT id, user_id, created_at, last_active, active_thread_id, message_count, state
FROM agentflow_agentsession WHERE tenant_id = %s AND agent_id = %s AND user_id = %s
"""
_UPDATE_SESSION_SQL = """
UPDATE agentflow_agentsession
SET active_thread_id = %s, message_count = %s, state = %s::jsonb, last_active = %s
WHERE tenant_id = %s AND agent_id = %s AND id = %s
"""


def _get_session(agent_id: AgentId, user_id: str) -> Session | None:
    with connection.cursor() as cursor:
        cursor.execute(_GET_SESSION_SQL, [require_tenant_id(), agent_id, user_id])
        row = cursor.fetchone()
    if row is None:
        return None
    session_id, user, created_at, last_active, thread_id, count, state = row
    return Session(
        session_id=str(session_id),
        user_id=user,
        created_at=to_timestamp(created_at),
        last_active=to_timestamp(last_active),
        active_thread_id=thread_id or None,
        message_count=count,
        metadata=dict(json.loads(state) if isinstance(state, str) else state or {}),
    )


def _update_session(agent_id: AgentId, session_id: uuid.UUID, session: Session) -> bool:
    params: list[Any] = [
        session.active_thread_id or "",
        session.message_count,
        json.dumps(session.metadata),
        to_datetime(session.last_active),
        require_tenant_id(),
        agent_id,
        session_id,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_UPDATE_SESSION_SQL, params)
        return cursor.rowcount == 1


_get_session_async = sync_to_async(_get_session)
_update_session_async = sync_to_async(_update_session)


class DjangoSessionStore:
    """Sessions of one agent's end users, in `AgentSession`."""

    def __init__(self, agent_id: AgentId) -> None:
        self.agent_id = agent_id

    async def get(self, user_id: str) -> Session | None:
        return await _get_session_async(self.agent_id, user_id)

    async def save(self, session: Session) -> None:
        session_id = _uuid(session.session_id)
        if session_id is None:
            raise ValueError(f"session id {session.session_id!r} is not a UUID")
        if await _update_session_async(self.agent_id, session_id, session):
            session.session_id = str(session_id)  # canonical form, as `get` returns it
            return
        # New session (or one that lost the race for this user): the row's id wins, and the
        # kernel record follows it so replies name the session that holds the messages.
        row_id = await _adopt_session_async(
            self.agent_id, session_id, session.user_id, session.created_at
        )
        await _update_session_async(self.agent_id, row_id, session)
        session.session_id = str(row_id)

    async def delete(self, user_id: str) -> None:
        # Cascades to the session's threads and messages (GDPR erasure of a user).
        await AgentSession.objects.filter(agent_id=self.agent_id, user_id=user_id).adelete()


# ------------------------------------------------------------------------------- threads


def encode_vector(vector: Vector) -> str:
    """float32 bytes in base64: exact, and a quarter of the size of a JSON list of floats."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> Vector | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) % 4:
        return None
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def _thread_state(thread: ConversationThread) -> dict[str, Any]:
    state: dict[str, Any] = {"keywords": sorted(thread.keywords)}
    if thread.centroid is not None:
        state["centroid"] = encode_vector(thread.centroid)
    return state


def _thread(row: Thread, user_id: str) -> ConversationThread:
    state = row.state or {}
    centroid = state.get("centroid")
    return ConversationThread(
        thread_id=row.id,
        session_id=str(row.session_id),
        user_id=user_id,
        topic=row.topic,
        intent=row.intent,
        created_at=to_timestamp(row.created_at),
        last_active=to_timestamp(row.last_active),
        status=ThreadStatus(row.status),
        message_count=row.message_count,
        escalated=row.escalated,
        resolution=row.resolution or None,
        centroid=decode_vector(centroid) if isinstance(centroid, str) else None,
        keywords=set(state.get("keywords") or ()),
    )


# A thread's save in one statement, new or not: inserted when its session is a session of
# this agent (in the current tenant), updated when it exists in that same session. Zero rows
# when the session row is missing, or the id belongs to another session or tenant.
_UPSERT_THREAD_SQL = """
INSERT INTO agentflow_thread ({columns})
SELECT {values} FROM agentflow_agentsession s
WHERE s.tenant_id = %s AND s.id = %s AND s.agent_id = %s
ON CONFLICT (id) DO UPDATE SET {updates}
WHERE agentflow_thread.tenant_id = EXCLUDED.tenant_id
  AND agentflow_thread.session_id = EXCLUDED.session_id
"""


@functools.cache
def _upsert_thread_sql(names: tuple[str, ...], updated: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The statement and the fields of its columns, formatted once per set of names."""
    by_attname = {field.attname: field for field in Thread._meta.concrete_fields}
    columns = [by_attname[name] for name in names]
    # Only column names and types are formatted in; every value is a parameter.
    sql = _UPSERT_THREAD_SQL.format(
        columns=", ".join(str(column.column) for column in columns),
        values=", ".join(f"%s::{_cast_type(column)}" for column in columns),
        updates=", ".join(f"{name} = EXCLUDED.{name}" for name in updated),
    )
    return sql, columns


def _upsert_thread(
    agent_id: AgentId, thread: ConversationThread, session_id: uuid.UUID, fields: dict[str, Any]
) -> bool:
    """Save the thread in one statement when its session row exists; False when it does not.

    It replaces an UPDATE that missed for every new thread, then a session INSERT that
    failed on the session the run's 202 had made, a SELECT of it, and the thread's INSERT.
    """
    tenant_id = require_tenant_id()
    values = {
        "tenant_id": tenant_id,
        "id": thread.thread_id,
        "session_id": session_id,
        "created_at": to_datetime(thread.created_at),
        **fields,
    }
    sql, columns = _upsert_thread_sql(tuple(values), tuple(fields))
    params = [
        column.get_db_prep_save(value, connection)
        for column, value in zip(columns, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, tenant_id, session_id, agent_id])
        return cursor.rowcount == 1


_upsert_thread_async = sync_to_async(_upsert_thread)


_OPEN_THREADS_SQL = """
SELECT t.id, t.session_id, t.topic, t.intent, t.created_at, t.last_active, t.status,
    t.message_count, t.escalated, t.resolution, t.state, s.user_id
FROM agentflow_thread t INNER JOIN agentflow_agentsession s ON t.session_id = s.id
WHERE t.tenant_id = %s AND t.session_id = %s AND s.agent_id = %s AND t.status = %s
ORDER BY t.last_active DESC LIMIT %s
"""


def _open_threads(agent_id: AgentId, session_id: uuid.UUID, limit: int) -> list[ConversationThread]:
    """The session's most recently active open threads, newest first."""
    params: list[Any] = [
        require_tenant_id(),
        session_id,
        agent_id,
        ThreadStatus.ACTIVE.value,
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_THREADS_SQL, params)
        found = cursor.fetchall()
    return [_thread_of(row) for row in found]


def _thread_of(row: Any) -> ConversationThread:
    """A row of ``_OPEN_THREADS_SQL`` as the kernel's record (as ``_thread`` maps a model)."""
    thread_id, session_id, topic, intent, created_at, last_active, status = row[:7]
    message_count, escalated, resolution, state, user_id = row[7:]
    state = (json.loads(state) if isinstance(state, str) else state) or {}
    centroid = state.get("centroid")
    return ConversationThread(
        thread_id=thread_id,
        session_id=str(session_id),
        user_id=user_id,
        topic=topic,
        intent=intent,
        created_at=to_timestamp(created_at),
        last_active=to_timestamp(last_active),
        status=ThreadStatus(status),
        message_count=message_count,
        escalated=escalated,
        resolution=resolution or None,
        centroid=decode_vector(centroid) if isinstance(centroid, str) else None,
        keywords=set(state.get("keywords") or ()),
    )


_open_threads_async = sync_to_async(_open_threads)


class DjangoThreadStore:
    """Conversation threads of one agent's sessions, in `Thread`.

    `list_threads(open_only=True)`, which the pipeline calls for every message, returns at
    most `max_open_threads`, the most recently active: like the in-memory store's bound, it
    keeps a long-lived session from making every message slower.
    """

    def __init__(self, agent_id: AgentId, *, max_open_threads: int = 50) -> None:
        if max_open_threads <= 0:
            raise ValueError("max_open_threads must be positive")
        self.agent_id = agent_id
        self.max_open_threads = max_open_threads

    async def get(self, session_id: str, thread_id: str) -> ConversationThread | None:
        session_uuid = _uuid(session_id)
        if session_uuid is None:
            return None
        row = await (
            Thread.objects.filter(id=thread_id, session_id=session_uuid)
            .filter(session__agent_id=self.agent_id)
            .select_related("session")
            .afirst()
        )
        return None if row is None else _thread(row, row.session.user_id)

    async def list_threads(
        self, session_id: str, *, open_only: bool = False
    ) -> list[ConversationThread]:
        session_uuid = _uuid(session_id)
        if session_uuid is None:
            return []
        if open_only:  # every message: the statement written once, not compiled per call
            found = await _open_threads_async(self.agent_id, session_uuid, self.max_open_threads)
            return found
        rows = Thread.objects.filter(
            session_id=session_uuid, session__agent_id=self.agent_id
        ).select_related("session")
        return [
            _thread(row, row.session.user_id) async for row in rows.order_by("created_at", "id")
        ]

    async def save(self, thread: ConversationThread) -> None:
        session_id = _uuid(thread.session_id)
        if session_id is None:
            raise ValueError(f"session id {thread.session_id!r} is not a UUID")
        fields: dict[str, Any] = {
            "topic": thread.topic[:500],
            "intent": thread.intent[:100],
            "status": ThreadStatus(thread.status).value,
            "escalated": thread.escalated,
            "resolution": thread.resolution or "",
            "message_count": thread.message_count,
            "state": _thread_state(thread),
            "last_active": to_datetime(thread.last_active),
        }
        if await _upsert_thread_async(self.agent_id, thread, session_id, fields):
            return
        # The session row is not there (a session the kernel made, not a run's): the
        # pipeline saves a new topic's thread before the session itself, so create it
        # (or follow it if another worker created this user's first).
        session_id = await _adopt_session_async(
            self.agent_id, session_id, thread.user_id, thread.created_at
        )
        thread.session_id = str(session_id)
        await Thread.objects.acreate(
            id=thread.thread_id,
            session_id=session_id,
            created_at=to_datetime(thread.created_at),
            **fields,
        )


# -------------------------------------------------------------------------------- memory

_REDACTOR = PIIRedactor()


def _redact(text: str) -> str:
    # The same redactor the kernel's builder gives MemoryManager for other users' cases.
    return _REDACTOR.redact(text).text


def _case(row: MemoryCaseRow) -> MemoryCase:
    embedding = row.embedding
    return MemoryCase(
        case_id=row.id,
        user_id=row.user_id,
        question=row.question,
        answer=row.answer,
        intent=row.intent,
        created_at=to_timestamp(row.created_at),
        thread_id=row.thread_id or None,
        resolved=row.resolved,
        effectiveness=row.effectiveness,
        vector=None if embedding is None else np.asarray(embedding, dtype=np.float32),
    )


_INSERT_AND_TRIM_SQL = """
WITH keep AS (
    SELECT id FROM (
        SELECT id, created_at FROM agentflow_memorycase
        WHERE tenant_id = %s AND agent_id = %s AND user_id = %s
        UNION ALL SELECT %s::varchar, %s::timestamptz
    ) AS cases ORDER BY created_at DESC, id DESC LIMIT %s
), added AS (
    INSERT INTO agentflow_memorycase ({columns})
    SELECT {casts} WHERE %s::varchar IN (SELECT id FROM keep)
)
DELETE FROM agentflow_memorycase
WHERE tenant_id = %s AND agent_id = %s AND user_id = %s AND id NOT IN (SELECT id FROM keep)
"""


def _cast_type(field: Any) -> str:
    """The column's type without a length: a too-long value fails on assignment, as an
    INSERT's would, instead of being cut by the cast."""
    return re.sub(r"^(varchar|character varying)\(\d+\)$", "varchar", field.db_type(connection))


@functools.cache
def _insert_and_trim_sql() -> str:
    """Formatted once per process: the columns and their types do not change."""
    fields = MemoryCaseRow._meta.concrete_fields
    columns = ", ".join(str(field.column) for field in fields)
    casts = ", ".join(f"%s::{_cast_type(field)}" for field in fields)
    # Only column names and types are formatted in; every value is a parameter.
    return _INSERT_AND_TRIM_SQL.format(columns=columns, casts=casts)


def _insert_and_trim(row: MemoryCaseRow, limit: int) -> tuple[str, list[Any]]:
    """One statement that leaves the user's newest ``limit`` cases, ``row`` counted in.

    The CTEs of one statement share a snapshot, so the trim cannot see the new row: the
    cases to keep are ranked with it, and it is inserted only if it is among them (a case
    older than the kept ones was inserted, then trimmed, before: the same end state).
    """
    fields = MemoryCaseRow._meta.concrete_fields
    values = [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields]
    owner = [row.tenant_id, row.agent_id, row.user_id]
    sql = _insert_and_trim_sql()
    ranked = [*owner, row.id, row.created_at, limit]
    return sql, [*ranked, *values, row.id, *owner]


# Newest first; on equal timestamps (both rows of a run written in one transaction share
# now()) "assistant" sorts before "user", which reversed is the order spoken.
_RECENT_MESSAGES_SQL = """
SELECT m.role, m.content, m.created_at
FROM agentflow_message m INNER JOIN agentflow_agentsession s ON m.session_id = s.id
WHERE m.tenant_id = %s AND m.session_id = %s AND s.agent_id = %s
ORDER BY m.created_at DESC, m.role ASC, m.id DESC LIMIT %s
"""


def _recent_messages(agent_id: AgentId, session_id: uuid.UUID, limit: int) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(_RECENT_MESSAGES_SQL, [require_tenant_id(), session_id, agent_id, limit])
        return cursor.fetchall()


# Two small ranked queries in one round trip: the user's own cases (found through the user
# index) and the recent resolved cases of other users (by primary key, one array parameter).
# An OR of both in one WHERE would make PostgreSQL scan every case of the agent.
_CASE_COLUMNS = (
    "id, user_id, question, answer, intent, created_at, thread_id, resolved, effectiveness,"
    " embedding, 1.0 - (embedding <=> %s::vector) AS similarity"
)
_OWN_CASES_SQL = f"""
(SELECT {_CASE_COLUMNS} FROM agentflow_memorycase
 WHERE tenant_id = %s AND agent_id = %s AND embedding IS NOT NULL AND user_id = %s
 ORDER BY similarity DESC LIMIT %s)
"""  # noqa: S608 - constant column list
_SHARED_CASES_SQL = f"""
UNION ALL (SELECT {_CASE_COLUMNS} FROM agentflow_memorycase
 WHERE tenant_id = %s AND agent_id = %s AND embedding IS NOT NULL
   AND id IN (SELECT unnest(%s::varchar[])) AND user_id <> %s
 ORDER BY similarity DESC LIMIT %s)
"""  # noqa: S608 - constant column list


def _search_cases(
    agent_id: AgentId, vector: Vector, user_id: str, limit: int, shared_ids: list[str]
) -> list[Any]:
    """Rows of ``_CASE_COLUMNS``: the user's best ``limit``, other users' among ``shared_ids``."""
    tenant_id = require_tenant_id()
    literal = vector_literal(vector)
    sql = _OWN_CASES_SQL
    params: list[Any] = [literal, tenant_id, agent_id, user_id, limit]
    if shared_ids:
        sql += _SHARED_CASES_SQL
        params += [literal, tenant_id, agent_id, shared_ids, user_id, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _case_of(row: Any) -> MemoryCase:
    case_id, user_id, question, answer, intent, created_at, thread_id = row[:7]
    resolved, effectiveness, embedding = row[7:10]
    return MemoryCase(
        case_id=case_id,
        user_id=user_id,
        question=question,
        answer=answer,
        intent=intent,
        created_at=to_timestamp(created_at),
        thread_id=thread_id or None,
        resolved=resolved,
        effectiveness=effectiveness,
        vector=None if embedding is None else _decode_embedding(embedding),
    )


def _decode_embedding(value: Any) -> Vector:
    if isinstance(value, str):  # the text form: "[0.1,0.2,...]"
        return np.array(value[1:-1].split(","), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


_recent_messages_async = sync_to_async(_recent_messages)
_search_cases_async = sync_to_async(_search_cases)


class DjangoMemoryStore:
    """Short-term history from `Message`, episodic cases in `MemoryCase` (one agent).

    * `append_messages` stores nothing: the run service writes the user and assistant
      `Message` rows of a run itself (linked to the Run); `recent_messages` reads them.
      History is empty once the newest message is older than `short_term_ttl_seconds`.
    * Each user keeps their newest `episodic_limit` cases; older ones are deleted as new
      ones arrive.
    * `search_cases` ranks the user's own cases and the resolved cases of other users of
      this agent (the newest `shared_limit` of them, as of at most `shared_ttl_seconds`
      ago in this process) exactly by cosine similarity. Other users' cases are returned
      anonymised (no user id, PII redacted); `MemoryManager` anonymises again, so a
      caller of the store alone is protected too.
    """

    def __init__(
        self,
        agent_id: AgentId,
        *,
        episodic_limit: int = 100,
        short_term_ttl_seconds: float | None = 3600,
        shared_limit: int = 1_000,
        shared_ttl_seconds: float = 30.0,
        anonymise: Callable[[str], str] = _redact,
        clock: Clock = time.time,
    ) -> None:
        if episodic_limit <= 0 or shared_limit < 0:
            raise ValueError("episodic_limit must be positive and shared_limit not negative")
        self.agent_id = agent_id
        self.episodic_limit = episodic_limit
        self.short_term_ttl_seconds = short_term_ttl_seconds
        self.shared_limit = shared_limit
        self.shared_ttl_seconds = shared_ttl_seconds
        self._shared: tuple[float, int, list[str]] | None = None  # (time, tenant, case ids)
        self._anonymise = anonymise
        self._clock = clock

    def _cases(self) -> Any:
        return MemoryCaseRow.objects.filter(agent_id=self.agent_id)

    async def append_messages(self, session_id: str, messages: Sequence[ChatMessage]) -> None:
        """Nothing to do: the run service persists each run's messages as `Message` rows."""

    async def recent_messages(self, session_id: str, limit: int) -> list[ChatMessage]:
        session_uuid = _uuid(session_id)
        if limit <= 0 or session_uuid is None:
            return []
        found = await _recent_messages_async(self.agent_id, session_uuid, limit)
        if not found:
            return []
        ttl = self.short_term_ttl_seconds
        if ttl is not None and self._clock() - to_timestamp(found[0][2]) > ttl:
            return []
        return [
            ChatMessage("assistant" if role == "assistant" else "user", content)
            for role, content, _ in reversed(found)
        ]

    async def add_case(self, case: MemoryCase) -> None:
        if case.user_id is None:
            raise ValueError("episodic cases belong to a user")
        await sync_to_async(self._add_case)(case, case.user_id)

    def _add_case(self, case: MemoryCase, user_id: str) -> None:
        # Insert and trim in one statement; no transaction needed: a concurrent trim of the
        # same user can only delete cases that are beyond the bound either way.
        _require_agent(self.agent_id)
        row = MemoryCaseRow(
            tenant_id=require_tenant_id(),
            id=case.case_id,
            agent_id=self.agent_id,
            user_id=user_id,
            thread_id=case.thread_id or "",
            question=case.question,
            answer=case.answer,
            intent=case.intent[:100],
            resolved=case.resolved,
            effectiveness=case.effectiveness,
            embedding=None if case.vector is None else np.asarray(case.vector, dtype=np.float32),
            created_at=to_datetime(case.created_at),
        )
        sql, params = _insert_and_trim(row, self.episodic_limit)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        if case.resolved:
            self._shared = None

    async def search_cases(
        self, vector: Vector, *, user_id: str, limit: int, include_shared: bool = True
    ) -> list[tuple[MemoryCase, float]]:
        if limit <= 0 or not np.any(vector):
            return []
        shared_ids = await self._shared_ids() if include_shared else []
        rows = await _search_cases_async(self.agent_id, vector, user_id, limit, shared_ids)
        found = []
        for row in rows:
            similarity = row[-1]
            if similarity <= 0.0:
                continue  # unrelated; filtered here, as SQL would repeat the vector literal
            case = _case_of(row)
            if case.user_id != user_id:
                case = self._anonymised(case)
            found.append((case, min(1.0, float(similarity))))
        found.sort(key=lambda pair: pair[1], reverse=True)
        return found[:limit]

    async def _shared_ids(self) -> list[str]:
        """Ids of the newest `shared_limit` resolved cases, refreshed every `shared_ttl_seconds`.

        Finding the newest resolved cases means sorting every resolved case of the agent
        (no index serves it), so it is done once per interval, not per message. A case
        resolved meanwhile is shared a little later; a forgotten user's ids find no rows.
        """
        if self.shared_limit <= 0:
            return []
        tenant_id = require_tenant_id()
        now = self._clock()
        cached = self._shared
        if (
            cached is not None
            and cached[1] == tenant_id
            and now - cached[0] <= self.shared_ttl_seconds
        ):
            return cached[2]
        recent = (
            self._cases()
            .filter(resolved=True, embedding__isnull=False)
            .order_by("-created_at")
            .values_list("id", flat=True)[: self.shared_limit]
        )
        ids = [case_id async for case_id in recent]
        self._shared = (now, tenant_id, ids)
        return ids

    def _anonymised(self, case: MemoryCase) -> MemoryCase:
        return dataclasses.replace(
            case,
            user_id=None,
            question=self._anonymise(case.question),
            answer=self._anonymise(case.answer),
        )

    async def resolve_thread(self, user_id: str, thread_id: str, effectiveness: float) -> int:
        changed = await (
            self._cases()
            .filter(user_id=user_id, thread_id=thread_id, resolved=False)
            .aupdate(resolved=True, effectiveness=effectiveness)
        )
        if changed:
            self._shared = None  # this process shares them from the next search on
        return changed

    async def user_cases(self, user_id: str) -> list[MemoryCase]:
        """The user's cases, oldest first (GDPR export, tests)."""
        rows = self._cases().filter(user_id=user_id).order_by("created_at", "id")
        return [_case(row) async for row in rows]

    async def forget_user(self, user_id: str) -> None:
        await self._cases().filter(user_id=user_id).adelete()


# ----------------------------------------------------------------------------- knowledge


class DjangoKnowledgeStore:
    """The agent's knowledge chunks, searched by cosine similarity (see `agentflow.knowledge`).

    Search ids are "<document uuid>#<chunk index>", titles the document's title.
    """

    def __init__(
        self,
        agent_id: AgentId,
        *,
        exact_search_max_rows: int = kb.EXACT_SEARCH_MAX_ROWS,
        count_ttl_seconds: float = 60.0,
    ) -> None:
        self.agent_id = agent_id
        self.exact_search_max_rows = exact_search_max_rows
        self.count_ttl_seconds = count_ttl_seconds
        # (monotonic time, chunk count): saves a query per message. A stale count can only
        # pick the other search method for a while, never change which rows may be found.
        self._counted: tuple[float, int] | None = None

    async def add(self, documents: Sequence[KernelDocument]) -> None:
        """Ingest kernel documents (e.g. the builder's `with_knowledge`) as new documents.

        A document whose id is the UUID of an existing document of this agent replaces it.
        `metadata["content_type"]` may say "text/markdown"; plain text is the default.
        """
        await sync_to_async(self._add)(list(documents))

    def _search(self, vector: Vector, limit: int) -> list[kb.ChunkHit]:
        now = time.monotonic()
        counted = self._counted
        if counted is None or now - counted[0] > self.count_ttl_seconds:
            counted = (now, kb.count_chunks(self.agent_id, self.exact_search_max_rows + 1))
            self._counted = counted
        return kb.search_chunks(
            self.agent_id,
            vector,
            limit=limit,
            exact_max_rows=self.exact_search_max_rows,
            agent_rows=counted[1],
        )

    def _add(self, documents: list[KernelDocument]) -> None:
        agent = Agent.objects.get(id=self.agent_id)
        with transaction.atomic():
            for document in documents:
                kb.delete_document(agent=agent, document_id=document.id)
                kb.ingest_document(
                    agent=agent,
                    title=document.title,
                    content_type=str(document.metadata.get("content_type", "text/plain")),
                    text=document.text,
                )
        self._counted = None

    async def search(self, query: str, vector: Vector, *, limit: int) -> list[ContextItem]:
        hits = await sync_to_async(self._search)(vector, limit)
        return [ContextItem("knowledge", hit.key, hit.title, hit.text, hit.score) for hit in hits]
