"""Store interfaces of the kernel (SPEC 4.4) and their records.

The kernel only talks to these Protocols: the Django platform plugs database-backed
stores in, library users and tests get the in-memory ones from
`agentflow.kernel.inmemory`. Records are plain mutable dataclasses; a store may
hand out live objects (in-memory) or fresh copies (database) as long as `save`
persists whatever the pipeline changed.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.results import ContextItem
from agentflow.kernel.vectors import Vector

# Ids made per `os.urandom` call: one system call per 256 ids instead of one per id.
_IDS_PER_READ = 256
# Ids read ahead, handed out in order. `deque.popleft` is atomic, so threads never share
# one; a forked child starts empty (below), so processes never share one either.
_pending_ids: deque[str] = deque()


def _read_ids() -> None:
    raw = np.frombuffer(os.urandom(16 * _IDS_PER_READ), dtype=np.uint8).reshape(-1, 16).copy()
    # The bits `uuid.UUID(..., version=4)` sets: version 4 and the RFC 4122 variant.
    raw[:, 6] = raw[:, 6] & 0x0F | 0x40
    raw[:, 8] = raw[:, 8] & 0x3F | 0x80
    text = raw.tobytes().hex()
    _pending_ids.extend(text[i : i + 32] for i in range(0, len(text), 32))


# Ids read ahead by the parent must never be handed out by a forked worker too (issue 13).
os.register_at_fork(after_in_child=_pending_ids.clear)


def new_id() -> str:
    """A fresh opaque id (32 hex characters): exactly `uuid.uuid4().hex`, from `os.urandom`.

    Without the `UUID` object, and read 256 at a time (several ids are made per message).
    Never a prefix or counter made at import, and nothing read ahead survives a fork:
    forked worker processes inherit module state, and ids made that way would collide
    across a Celery prefork pool (issue 13).
    """
    while True:
        try:
            return _pending_ids.popleft()
        except IndexError:
            _read_ids()


@dataclass(slots=True)
class Session:
    session_id: str
    user_id: str
    created_at: float
    last_active: float
    active_thread_id: str | None = None
    message_count: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


class ThreadStatus(StrEnum):
    ACTIVE = "active"
    RESOLVED = "resolved"
    ABANDONED = "abandoned"


@dataclass(slots=True)
class ConversationThread:
    thread_id: str
    session_id: str
    user_id: str
    topic: str
    intent: str
    created_at: float
    last_active: float
    status: ThreadStatus = ThreadStatus.ACTIVE
    message_count: int = 0
    escalated: bool = False
    resolution: str | None = None
    # Sum of the normalised message vectors: its direction is the thread's topic.
    centroid: Vector | None = None
    centroid_norm: float = 0.0
    # Salient words of its messages (bounded): lets short closings find their thread.
    keywords: set[str] = field(default_factory=set)

    @property
    def is_open(self) -> bool:
        return self.status is ThreadStatus.ACTIVE


@dataclass(slots=True)
class MemoryCase:
    """One question/answer exchange remembered for a user (episodic memory)."""

    case_id: str
    user_id: str | None
    question: str
    answer: str
    intent: str
    created_at: float
    thread_id: str | None = None
    resolved: bool = False
    effectiveness: float = 0.0
    vector: Vector | None = None


@dataclass(slots=True)
class KnowledgeDocument:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: Vector | None = None


@dataclass(slots=True)
class GoldenPath:
    """An approved answer to a question (learning loop, SPEC 9)."""

    id: str
    question: str
    answer: str
    category: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: Vector | None = None


@dataclass(slots=True)
class Playbook:
    """An ordered procedure for an intent (procedural memory)."""

    intent: str
    name: str
    steps: tuple[str, ...]
    version: int = 1
    success_rate: float = 0.0
    id: str = ""

    def summary(self) -> dict[str, Any]:
        """How a reply's trace names the playbook it was given."""
        return {
            "id": self.id,
            "name": self.name,
            "intent": self.intent,
            "version": self.version,
            "steps": list(self.steps),
        }


@runtime_checkable
class SessionStore(Protocol):
    async def get(self, user_id: str) -> Session | None:
        """The user's live session, or None when missing or expired."""
        ...

    async def save(self, session: Session) -> None: ...

    async def delete(self, user_id: str) -> None: ...


@runtime_checkable
class ThreadStore(Protocol):
    async def get(self, session_id: str, thread_id: str) -> ConversationThread | None: ...

    async def list_threads(
        self, session_id: str, *, open_only: bool = False
    ) -> list[ConversationThread]: ...

    async def save(self, thread: ConversationThread) -> None: ...


@runtime_checkable
class MemoryStore(Protocol):
    """Short-term conversation memory per session and episodic cases per user."""

    async def append_messages(self, session_id: str, messages: Sequence[ChatMessage]) -> None: ...

    async def recent_messages(self, session_id: str, limit: int) -> list[ChatMessage]: ...

    async def add_case(self, case: MemoryCase) -> None: ...

    async def search_cases(
        self, vector: Vector, *, user_id: str, limit: int, include_shared: bool = True
    ) -> list[tuple[MemoryCase, float]]:
        """The user's own cases plus resolved cases of other users, best first.

        Stores may return other users' cases raw; `MemoryManager` anonymises them.
        """
        ...

    async def resolve_thread(self, user_id: str, thread_id: str, effectiveness: float) -> int:
        """Mark the cases of a thread resolved; returns how many changed."""
        ...

    async def forget_user(self, user_id: str) -> None: ...


@runtime_checkable
class KnowledgeStore(Protocol):
    async def add(self, documents: Sequence[KnowledgeDocument]) -> None: ...

    async def search(self, query: str, vector: Vector, *, limit: int) -> list[ContextItem]: ...


@runtime_checkable
class GoldenPathStore(Protocol):
    """Golden paths by question similarity. A store whose ``search`` also takes ``intent``
    (see :func:`golden_path_matches`) is given the message's intent, so a paraphrase of another
    category's question cannot answer it; stores without that keyword still work."""

    async def add(self, paths: Sequence[GoldenPath]) -> None: ...

    async def search(self, query: str, vector: Vector, *, limit: int) -> list[ContextItem]: ...


def golden_path_matches(category: str, intent: str | None) -> bool:
    """Whether a golden path of `category` may answer a message of `intent` (issue 21).

    Only within the same category: the lexical embedder ranks a paraphrase of another
    category's question above a differently worded one of the right category, and the
    classifier, trained on the categories' examples, tells them apart far better. A path
    without a category (given in code) and a message without an intent match anything;
    OUT_OF_SCOPE is a category of its own, so off-topic questions a person answered are
    found again for off-topic questions only.
    """
    return not category or not intent or category == intent


@runtime_checkable
class ProceduralStore(Protocol):
    async def get_playbook(self, intent: str) -> Playbook | None: ...

    async def save_playbook(self, playbook: Playbook) -> None: ...
