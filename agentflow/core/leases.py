"""Leases of a worker process on the work it holds: advisory locks on one connection.

A run is processed by whoever holds its lease: a session-level PostgreSQL advisory lock.
All leases of a process live on one dedicated connection, so hundreds of runs in flight
hold one connection, not one each (issue 15), and a pooled connection can go back to the
pool while its run waits for the LLM. When the process dies (kill -9, OOM, a lost host:
TCP keepalives), PostgreSQL drops the connection and every lease with it, so a recovery
sweep reading ``pg_locks`` sees at once which work has no live owner.

If the connection itself breaks while the process lives, it is reopened and the leases it
held are taken again; one another worker took meanwhile stays lost (logged), which is
safe because the work it guards settles by compare-and-set.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from celery.signals import worker_process_shutdown, worker_shutdown
from django.db import connections

log = structlog.get_logger(__name__)

# The server notices a silent peer (a host gone without closing its sockets) within about
# a minute instead of the kernel's two hours.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


_all: weakref.WeakSet[AdvisoryLeases] = weakref.WeakSet()


class AdvisoryLeases:
    """Session-level advisory locks ``(namespace, hashtext(key))`` held by this process."""

    def __init__(self, namespace: int, *, alias: str = "default") -> None:
        self.namespace = namespace
        self.alias = alias
        self._lock = threading.Lock()
        self._pid = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        _all.add(self)

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Try to take the lease on ``key``; yields whether it was taken; releases after."""
        taken = self.try_acquire(key)
        try:
            yield taken
        finally:
            if taken:
                self.release(key)

    def try_acquire(self, key: str) -> bool:
        with self._lock:
            taken = self._execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key)
            if taken:
                self._held.add(key)
            return taken

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)
            if self._conn is not None and not self._conn.closed and self._pid == os.getpid():
                self._execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)

    def held(self) -> int:
        return len(self._held)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()  # the server releases every lease of the session
            self._conn, self._held = None, set()

    def _execute(self, sql: str, key: str) -> bool:
        """One lock statement; a broken connection is reopened (and its leases retaken) once."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                row = conn.execute(sql, (self.namespace, key)).fetchone()
                return bool(row and row[0])
            except psycopg.OperationalError:
                if attempt == 2 or not conn.closed:
                    raise
                log.warning("lease.connection_lost", held=len(self._held))
        raise AssertionError("unreachable")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():  # a forked child: the parent's socket is not ours
            self._conn, self._held, self._pid = None, set(), os.getpid()
        if self._conn is None or self._conn.closed:
            params = connections[self.alias].get_connection_params()
            self._conn = psycopg.connect(autocommit=True, **{**params, **_KEEPALIVES})
            self._retake_held(self._conn)
        return self._conn

    def _retake_held(self, conn: psycopg.Connection[Any]) -> None:
        for key in list(self._held):
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (self.namespace, key)
            ).fetchone()
            if not (row and row[0]):
                self._held.discard(key)
                log.warning("lease.lost_to_another_worker", key=key)


def close_all() -> None:
    """Close every lease connection of this process (worker shutdown, the test suite)."""
    for leases in list(_all):
        leases.close()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_on_shutdown(**_: Any) -> None:
    close_all()
