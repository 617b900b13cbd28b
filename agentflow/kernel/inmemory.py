"""In-memory implementations of the store Protocols (library use and tests).

Every store bounds itself (LRU over sessions or users, TTL where the data is
short-lived), so a long-running process cannot grow without limit and no store
needs to be told when another one evicts a session.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from operator import itemgetter
from typing import Generic, TypeVar

import numpy as np

from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import (
    ConversationThread,
    GoldenPath,
    KnowledgeDocument,
    MemoryCase,
    Playbook,
    Session,
    golden_path_matches,
)
from agentflow.kernel.vectors import Embedder, Vector, VectorIndex, embed_texts

Clock = Callable[[], float]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringLRU(Generic[K, V]):
    """A dict bounded by count (least recently used goes first) and idle time."""

    __slots__ = ("_clock", "_data", "_max", "_ttl")

    def __init__(self, max_items: int, ttl_seconds: float | None, clock: Clock) -> None:
        if max_items <= 0:
            raise ValueError("max_items must be positive")
        self._data: OrderedDict[K, list[object]] = OrderedDict()
        self._max = max_items
        self._ttl = ttl_seconds
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        ttl = self._ttl
        if ttl is not None:  # without a TTL the time of use is never read: no clock
            now = self._clock()
            if now - entry[0] > ttl:  # type: ignore[operator]
                del self._data[key]
                return None
            entry[0] = now
        self._data.move_to_end(key)
        return entry[1]  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        self._data[key] = [self._clock(), value]
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        entry = self._data.pop(key, None)
        return None if entry is None else entry[1]  # type: ignore[return-value]

    def values(self) -> list[V]:
        return [entry[1] for entry in self._data.values()]  # type: ignore[misc]


class InMemorySessionStore:
    """Sessions by user id; expired after `ttl_seconds` idle, LRU-evicted past `max_sessions`."""

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(
        self, *, ttl_seconds: float = 3600, max_sessions: int = 100_000, clock: Clock = time.time
    ) -> None:
        self._sessions: ExpiringLRU[str, Session] = ExpiringLRU(max_sessions, ttl_seconds, clock)

    def __len__(self) -> int:
        return len(self._sessions)

    async def get(self, user_id: str) -> Session | None:
        return self._sessions.get(user_id)

    async def save(self, session: Session) -> None:
        self._sessions.put(session.user_id, session)

    async def delete(self, user_id: str) -> None:
        self._sessions.pop(user_id)


class _SessionThreads:
    __slots__ = ("closed", "open")

    def __init__(self) -> None:
        self.open: dict[str, ConversationThread] = {}
        # Resolved and abandoned threads, oldest closed first.
        self.closed: OrderedDict[str, ConversationThread] = OrderedDict()


class InMemoryThreadStore:
    """Threads per session; at most `max_threads_per_session` kept (closed ones go first).

    Open and closed threads are kept apart: every message lists the open ones, and that
    should not cost more as a long session accumulates closed threads.
    """

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(
        self,
        *,
        ttl_seconds: float = 3600,
        max_sessions: int = 100_000,
        max_threads_per_session: int = 50,
        clock: Clock = time.time,
    ) -> None:
        self._by_session: ExpiringLRU[str, _SessionThreads] = ExpiringLRU(
            max_sessions, ttl_seconds, clock
        )
        self._max_threads = max_threads_per_session

    async def get(self, session_id: str, thread_id: str) -> ConversationThread | None:
        threads = self._by_session.get(session_id)
        if threads is None:
            return None
        return threads.open.get(thread_id) or threads.closed.get(thread_id)

    async def list_threads(
        self, session_id: str, *, open_only: bool = False
    ) -> list[ConversationThread]:
        threads = self._by_session.get(session_id)
        if threads is None:
            return []
        if open_only:
            return list(threads.open.values())
        return sorted((*threads.open.values(), *threads.closed.values()), key=_created)

    async def save(self, thread: ConversationThread) -> None:
        threads = self._by_session.get(thread.session_id)
        if threads is None:
            threads = _SessionThreads()
            self._by_session.put(thread.session_id, threads)
        if thread.is_open:
            threads.open[thread.thread_id] = thread
            threads.closed.pop(thread.thread_id, None)
        else:
            threads.open.pop(thread.thread_id, None)
            threads.closed[thread.thread_id] = thread
            threads.closed.move_to_end(thread.thread_id)
        while len(threads.open) + len(threads.closed) > self._max_threads:
            if threads.closed:
                threads.closed.popitem(last=False)
            else:  # only open threads left: the least recently active goes
                oldest = min(threads.open.values(), key=_last_active)
                del threads.open[oldest.thread_id]


def _created(thread: ConversationThread) -> float:
    return thread.created_at


def _last_active(thread: ConversationThread) -> float:
    return thread.last_active


class _CaseIndex:
    """The last `capacity` cases with a vector, their vectors kept in one matrix.

    Rows are overwritten in place, ring-buffer style, once full: adding a case never
    restacks the matrix (a search right after each new case is the common pattern).
    The matrix grows by doubling, so a user with three cases holds eight rows, not 100.
    """

    __slots__ = ("capacity", "cases", "matrix", "next")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cases: list[MemoryCase] = []
        self.matrix: Vector | None = None
        self.next = 0

    def __len__(self) -> int:
        return len(self.cases)

    def add(self, case: MemoryCase) -> None:
        vector = case.vector
        if vector is None:
            return
        size = len(self.cases)
        if size < self.capacity:
            if self.matrix is None or size == len(self.matrix):
                rows = min(self.capacity, max(8, 2 * size))
                grown = np.empty((rows, len(vector)), dtype=np.float32)
                if self.matrix is not None:
                    grown[:size] = self.matrix
                self.matrix = grown
            self.matrix[size] = vector
            self.cases.append(case)
            return
        assert self.matrix is not None
        self.matrix[self.next] = vector
        self.cases[self.next] = case
        self.next = (self.next + 1) % self.capacity

    def top(
        self, vector: Vector, count: int, *, other_than: str | None = None
    ) -> list[tuple[MemoryCase, float]]:
        """The `count` best-scoring cases with a positive score (unordered), less those of
        user `other_than` among them (filtered in the same pass)."""
        size = len(self.cases)
        if not size or self.matrix is None or count <= 0:
            return []
        scores = self.matrix[:size].dot(vector)
        if size > count:
            index = scores.argpartition(size - count)[size - count :]
            picked, values = index.tolist(), scores[index].tolist()
        else:
            picked, values = range(size), scores.tolist()
        cases = self.cases
        if other_than is None:
            return [(cases[i], v) for i, v in zip(picked, values, strict=True) if v > 0.0]
        return [
            (case, v)
            for i, v in zip(picked, values, strict=True)
            if v > 0.0 and (case := cases[i]).user_id != other_than
        ]

    def without_user(self, user_id: str) -> _CaseIndex:
        kept = _CaseIndex(self.capacity)
        for case in self._oldest_first():
            if case.user_id != user_id:
                kept.add(case)
        return kept

    def _oldest_first(self) -> list[MemoryCase]:
        return self.cases[self.next :] + self.cases[: self.next]


class _UserCases:
    __slots__ = ("cases", "index")

    def __init__(self, limit: int) -> None:
        self.cases: deque[MemoryCase] = deque(maxlen=limit)
        self.index = _CaseIndex(limit)


# The score of a (case, score) pair, as a C-level key: a search sorts a dozen pairs.
_score: Callable[[tuple[MemoryCase, float]], float] = itemgetter(1)


class InMemoryMemoryStore:
    """Short-term messages per session (TTL) and the last `episodic_limit` cases per user.

    Resolved cases also enter a bounded shared pool that other users may search
    (anonymised by `MemoryManager` before anyone sees them).
    """

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(
        self,
        *,
        short_term_messages: int = 20,
        ttl_seconds: float = 3600,
        episodic_limit: int = 100,
        max_sessions: int = 100_000,
        max_users: int = 100_000,
        shared_limit: int = 128,
        clock: Clock = time.time,
    ) -> None:
        self._short: ExpiringLRU[str, deque[ChatMessage]] = ExpiringLRU(
            max_sessions, ttl_seconds, clock
        )
        self._users: ExpiringLRU[str, _UserCases] = ExpiringLRU(max_users, None, clock)
        self._short_limit = short_term_messages
        self._episodic_limit = episodic_limit
        self._shared = _CaseIndex(shared_limit)

    async def append_messages(self, session_id: str, messages: Sequence[ChatMessage]) -> None:
        history = self._short.get(session_id)
        if history is None:
            history = deque(maxlen=self._short_limit)
            self._short.put(session_id, history)
        history.extend(messages)

    async def recent_messages(self, session_id: str, limit: int) -> list[ChatMessage]:
        history = self._short.get(session_id)
        if not history or limit <= 0:
            return []
        if limit >= len(history):
            return list(history)
        return list(history)[-limit:]

    async def add_case(self, case: MemoryCase) -> None:
        if case.user_id is None:
            raise ValueError("episodic cases belong to a user")
        entry = self._users.get(case.user_id)
        if entry is None:
            entry = _UserCases(self._episodic_limit)
            self._users.put(case.user_id, entry)
        entry.cases.append(case)
        entry.index.add(case)
        if case.resolved:
            self._shared.add(case)

    async def search_cases(
        self, vector: Vector, *, user_id: str, limit: int, include_shared: bool = True
    ) -> list[tuple[MemoryCase, float]]:
        if limit <= 0:
            return []
        found: list[tuple[MemoryCase, float]] = []
        entry = self._users.get(user_id)
        if entry is not None:
            found += entry.index.top(vector, limit)
        if include_shared and len(self._shared):
            # Over-fetch: the user's own resolved cases sit in the pool too and are skipped
            # here (they came from the user's list). If more than the extra are skipped,
            # they all outrank the missing ones, so the overall top `limit` is still exact.
            found += self._shared.top(vector, 2 * limit + 4, other_than=user_id)
        found.sort(key=_score, reverse=True)
        return [(case, min(1.0, score)) for case, score in found[:limit]]

    async def resolve_thread(self, user_id: str, thread_id: str, effectiveness: float) -> int:
        entry = self._users.get(user_id)
        if entry is None:
            return 0
        changed = 0
        for case in entry.cases:
            if case.thread_id == thread_id and not case.resolved:
                case.resolved = True
                case.effectiveness = effectiveness
                self._shared.add(case)
                changed += 1
        return changed

    async def user_cases(self, user_id: str) -> list[MemoryCase]:
        entry = self._users.get(user_id)
        return [] if entry is None else list(entry.cases)

    async def forget_user(self, user_id: str) -> None:
        self._users.pop(user_id)
        self._shared = self._shared.without_user(user_id)


class InMemoryKnowledgeStore:
    """Knowledge articles embedded on `add` (title and text) and searched exactly."""

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._index: VectorIndex[KnowledgeDocument] = VectorIndex()

    def __len__(self) -> int:
        return len(self._index)

    async def add(self, documents: Sequence[KnowledgeDocument]) -> None:
        missing = [d for d in documents if d.vector is None]
        if missing:
            matrix = await embed_texts(self._embedder, [f"{d.title}\n{d.text}" for d in missing])
            for doc, row in zip(missing, matrix, strict=True):
                doc.vector = row
        ids = {d.id for d in documents}
        self._index.remove_where(lambda d: d.id in ids)
        for doc in documents:
            self._index.add(doc, doc.vector)  # type: ignore[arg-type]

    async def search(self, query: str, vector: Vector, *, limit: int) -> list[ContextItem]:
        return [
            ContextItem("knowledge", doc.id, doc.title, doc.text, score)
            for doc, score in self._index.search(vector, limit)
        ]


class InMemoryGoldenPathStore:
    """Golden paths matched by the similarity of their question to the message."""

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder
        self._index: VectorIndex[GoldenPath] = VectorIndex()

    def __len__(self) -> int:
        return len(self._index)

    async def add(self, paths: Sequence[GoldenPath]) -> None:
        missing = [p for p in paths if p.vector is None]
        if missing:
            matrix = await embed_texts(self._embedder, [p.question for p in missing])
            for path, row in zip(missing, matrix, strict=True):
                path.vector = row
        ids = {p.id for p in paths}
        self._index.remove_where(lambda p: p.id in ids)
        for path in paths:
            self._index.add(path, path.vector)  # type: ignore[arg-type]

    async def search(
        self, query: str, vector: Vector, *, limit: int, intent: str | None = None
    ) -> list[ContextItem]:
        # The index is small (approved answers): rank them all, then keep the intent's.
        ranked = self._index.search(vector, limit if not intent else len(self._index))
        found = [(p, s) for p, s in ranked if golden_path_matches(p.category, intent)][:limit]
        return [
            ContextItem("golden_path", path.id, path.question, path.answer, score)
            for path, score in found
        ]


class InMemoryProceduralStore:
    """The newest playbook version per intent."""

    io_bound = False  # never waits on I/O: the pipeline awaits it inline

    def __init__(self, playbooks: Sequence[Playbook] = ()) -> None:
        self._playbooks: dict[str, Playbook] = {}
        for playbook in playbooks:
            self._keep(playbook)

    def _keep(self, playbook: Playbook) -> None:
        current = self._playbooks.get(playbook.intent)
        if current is None or playbook.version >= current.version:
            self._playbooks[playbook.intent] = playbook

    async def get_playbook(self, intent: str) -> Playbook | None:
        return self._playbooks.get(intent)

    async def save_playbook(self, playbook: Playbook) -> None:
        self._keep(playbook)
