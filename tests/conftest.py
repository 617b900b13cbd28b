"""Fixtures shared by every test suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def celery_worker_app() -> Iterator[object]:
    """A real Celery worker (threads, in this process) on the embedded Redis broker.

    Use with ``transactional_db`` so the worker's connection sees committed rows.
    """
    import celery.contrib.testing.tasks  # noqa: F401 - registers celery.ping for the ready check
    from celery.contrib.testing.worker import start_worker

    from agentflow.core import worker_loop
    from agentflow.server.celery import app

    queues = [queue.name for queue in app.conf.task_queues]
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        queues=queues,
        perform_ping_check=False,
        shutdown_timeout=30,
    ):
        yield app
    worker_loop.close_all()  # the worker's threads are gone; their loops must not leak


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """Each test gets its own channel layer object.

    The layer is a process-wide singleton, and channels_redis keeps its receive state (a
    count, a lock, the loop receiving) on it. Each async test runs on a loop of its own, so
    a consumer that a test left receiving when its loop closed would otherwise leave that
    state to the next test, which then fails with "bound to a different event loop".
    Group membership lives in Redis, so nothing a test expects is lost.
    """
    from channels.layers import channel_layers

    channel_layers.backends = {}


@pytest.fixture(autouse=True, scope="session")
def _close_worker_loops() -> Iterator[None]:
    """Runs executed in the test process itself get loops too: close them at the end."""
    yield
    from agentflow.core import leases, worker_loop

    worker_loop.close_all()
    leases.close_all()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Create and migrate the test database as the schema's owner (tests/db_roles.py)."""
    from tests import db_roles

    db_roles.use_owner()


def _flush_as_owner() -> None:
    """Transactional tests are emptied with TRUNCATE, which the app's role may not do."""
    from django.test import TransactionTestCase

    from tests import db_roles

    teardown = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self: TransactionTestCase) -> None:
        with db_roles.owner_connection():
            teardown(self)

    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Tests run as the app's own role; the test database is dropped cleanly even when
    worker threads still hold connections."""
    from django.db import connection

    from tests import db_roles

    with django_db_blocker.unblock():
        db_roles.install_superuser_function()
    db_roles.use_app()
    _flush_as_owner()
    yield
    db_roles.use_owner()
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def forgotten_audit_walks() -> Iterator[None]:
    """No audit-chain walk remembered by this process before or after the test (the
    incremental verifier's per-process memory, governance.verify)."""
    from governance import verify

    verify.forget_walks()
    yield
    verify.forget_walks()


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sequence of every audit event the chain verifier re-hashes during the test."""
    from governance import verify

    seen: list[int] = []
    real = verify.compute_hash

    def counting(prev_hash: str, payload: dict[str, Any]) -> str:
        seen.append(payload["sequence"])
        return real(prev_hash, payload)

    monkeypatch.setattr(verify, "compute_hash", counting)
    return seen
