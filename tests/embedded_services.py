"""Pytest plugin: real PostgreSQL+pgvector and Redis for the whole test session.

Loaded with ``-p tests.embedded_services`` (see pyproject.toml). Its hook wraps
``pytest_load_initial_conftests`` so the servers are up and ``DATABASE_URL`` /
``REDIS_URL`` are in the environment *before* pytest-django imports the
settings. Set either variable yourself to test against an external server (with
``DATABASE_OWNER_URL`` too, to run the app as a role of its own as the embedded one does).
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis, remove_tree


@dataclass
class Services:
    home: Path
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    started: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        remove_tree(self.home)


_services: Services | None = None


def _start() -> Services:
    home = Path(tempfile.mkdtemp(prefix="agentflow-test-"))
    services = Services(home=home)
    os.environ.setdefault("AGENTFLOW_ENV", "test")
    os.environ["AGENTFLOW_HOME"] = str(home)
    if not os.environ.get("DATABASE_URL"):
        services.postgres = EmbeddedPostgres(home / "postgres")
        # Like production: the schema's owner migrates, the app connects as its own role
        # (created by that migrate; see tests/db_roles.py).
        os.environ["DATABASE_OWNER_URL"] = services.postgres.start()
        os.environ["DATABASE_URL"] = services.postgres.runtime_url()
        services.started.append("postgres")
    if not os.environ.get("REDIS_URL"):
        services.redis = EmbeddedRedis(home / "redis")
        os.environ["REDIS_URL"] = services.redis.start()
        services.started.append("redis")
    atexit.register(services.stop)  # also on an interrupted session
    return services


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    global _services
    # Kernel-only runs (`-p no:django`) need no servers: skip their start-up cost. Under
    # pytest-xdist the controller runs no test: each worker starts servers of its own (its
    # own Celery queues, channel groups and database roles; nothing shared between them).
    wanted = not early_config.pluginmanager.is_blocked("django") and not _is_xdist_controller(
        early_config
    )
    if _services is None and wanted and not early_config.known_args_namespace.help:
        _services = _start()
    return (yield)


def _is_xdist_controller(config: pytest.Config) -> bool:
    processes = getattr(config.known_args_namespace, "numprocesses", None)
    return bool(processes) and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_unconfigure(config: pytest.Config) -> None:
    global _services
    if _services is not None:
        _services.stop()
        atexit.unregister(_services.stop)
        _services = None


@pytest.fixture(scope="session")
def embedded_services() -> Services:
    if _services is None:
        pytest.skip("embedded services were not started")
    return _services
