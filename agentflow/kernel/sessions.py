"""Per-user sessions and per-user serialisation (SPEC 4.1, first stage).

Messages of one user are processed strictly in arrival order (a per-user
asyncio lock); different users never wait for each other. Locks exist only
while someone holds or waits for them, so idle users cost nothing.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from agentflow.kernel.inmemory import Clock
from agentflow.kernel.stores import Session, SessionStore, new_id


class _LockEntry:
    """A user's turn: held by `holders` minus the waiters. The asyncio lock is made only
    when a second message of the user arrives while one is in progress (most messages
    find nobody there and take the turn without one)."""

    __slots__ = ("holders", "lock")

    def __init__(self) -> None:
        self.lock: asyncio.Lock | None = None
        self.holders = 1


class _UserLock:
    """`async with manager.lock(user_id)`: hold the user's lock for the block."""

    __slots__ = ("_manager", "_user_id")

    def __init__(self, manager: SessionManager, user_id: str) -> None:
        self._manager = manager
        self._user_id = user_id

    async def __aenter__(self) -> None:
        await self._manager.acquire(self._user_id)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._manager.release(self._user_id)


class SessionManager:
    """Finds or creates a user's session in a `SessionStore` and serialises their messages."""

    def __init__(self, store: SessionStore, *, clock: Clock = time.time) -> None:
        self.store = store
        self._clock = clock
        self._locks: dict[str, _LockEntry] = {}

    @property
    def locked_users(self) -> int:
        """How many users currently hold or wait for their lock."""
        return len(self._locks)

    def try_acquire(self, user_id: str) -> bool:
        """Take the user's turn if nobody holds or waits for it (no await, no lock made)."""
        if user_id in self._locks:
            return False
        self._locks[user_id] = _LockEntry()
        return True

    async def acquire(self, user_id: str) -> None:
        entry = self._locks.get(user_id)
        if entry is None:
            self._locks[user_id] = _LockEntry()
            return
        lock = entry.lock
        if lock is None:
            # The holder took its turn without a lock: take the new lock on its behalf
            # (free and fresh, so this returns at once), then queue behind it.
            lock = entry.lock = asyncio.Lock()
            await lock.acquire()
        entry.holders += 1
        try:
            await lock.acquire()
        except BaseException:
            self._forget(user_id, entry)
            raise

    def release(self, user_id: str) -> None:
        entry = self._locks[user_id]
        if entry.lock is not None:
            entry.lock.release()
        self._forget(user_id, entry)

    def _forget(self, user_id: str, entry: _LockEntry) -> None:
        entry.holders -= 1
        if entry.holders == 0:
            del self._locks[user_id]

    def lock(self, user_id: str) -> _UserLock:
        return _UserLock(self, user_id)

    async def get_or_create(self, user_id: str) -> tuple[Session, bool]:
        """The user's live session and whether it was just created."""
        session = await self.store.get(user_id)
        if session is not None:
            return session, False
        now = self._clock()
        session = Session(session_id=new_id(), user_id=user_id, created_at=now, last_active=now)
        return session, True

    async def save(self, session: Session) -> None:
        session.last_active = self._clock()
        await self.store.save(session)

    async def end(self, user_id: str) -> None:
        await self.store.delete(user_id)
