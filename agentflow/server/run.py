"""``make run``: the whole platform in one terminal.

Starts the embedded PostgreSQL+pgvector and Redis (unless ``DATABASE_URL`` /
``REDIS_URL`` point elsewhere), migrates, makes sure an admin account exists, seeds
the demo tenant on the first start (``AGENTFLOW_DEMO=0`` skips it), then supervises
the ASGI web server, one Celery worker and Celery beat. Ctrl-C (or SIGTERM) stops
the children first, then Redis, then PostgreSQL, and keeps the data under
``AGENTFLOW_HOME`` for the next start. A lock file makes a second ``make run`` on the
same data folder refuse instead of corrupting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
QUEUES = "default,runs,hitl,learning,webhooks,maintenance"
_PR_SET_PDEATHSIG = 1


def say(message: str) -> None:
    print(f"agentflow | {message}", flush=True)


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervisor:
    home: Path
    host: str
    port: int
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    lock: IO[str] | None = None
    stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------
    def acquire_lock(self) -> bool:
        self.home.mkdir(parents=True, exist_ok=True)
        handle = (self.home / "run.lock").open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            say(f"AgentFlow is already running from {self.home} ({owner}).")
            say("Stop it with Ctrl-C in its terminal, or set AGENTFLOW_HOME to use another folder.")
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, {self.url}")
        handle.flush()
        self.lock = handle
        return True

    def start_services(self, env: dict[str, str]) -> None:
        if not env.get("DATABASE_URL"):
            started = time.monotonic()
            self.postgres = EmbeddedPostgres(self.home / "postgres")
            env["DATABASE_URL"] = self.postgres.start()
            say(f"PostgreSQL 16 + pgvector (embedded) ready in {time.monotonic() - started:.1f}s")
        else:
            say("using DATABASE_URL from the environment")
        if not env.get("REDIS_URL"):
            started = time.monotonic()
            self.redis = EmbeddedRedis(self.home / "redis")
            env["REDIS_URL"] = self.redis.start()
            say(f"Redis (embedded) ready in {time.monotonic() - started:.1f}s")
        else:
            say("using REDIS_URL from the environment")
        runtime = {
            "database_url": env["DATABASE_URL"],
            "redis_url": env["REDIS_URL"],
            "pid": os.getpid(),
            "url": self.url,
        }
        runtime_file = self.home / "runtime.json"
        runtime_file.write_text(json.dumps(runtime, indent=2), encoding="utf-8")
        runtime_file.chmod(0o600)

    def manage(self, env: dict[str, str], *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)  # noqa: S603

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children[name] = subprocess.Popen(  # noqa: S603 - our own argv
            argv, cwd=ROOT, env=env, preexec_fn=_die_with_parent, start_new_session=True
        )

    def start_children(self, env: dict[str, str]) -> None:
        python = sys.executable
        self.spawn(
            "web",
            [
                python,
                "-m",
                "uvicorn",
                "agentflow.server.asgi:application",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--lifespan",
                "off",
                "--no-access-log",
            ],
            env,
        )
        self.spawn(
            "worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "agentflow.server.celery",
                "worker",
                "--queues",
                QUEUES,
                "--concurrency",
                env.get("WORKER_CONCURRENCY", "2"),
                "--loglevel",
                "INFO",
                "--hostname",
                f"worker@{os.uname().nodename}",
            ],
            env,
        )
        self.spawn(
            "beat",
            [
                python,
                "-m",
                "celery",
                "-A",
                "agentflow.server.celery",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.home / "celerybeat-schedule"),
            ],
            env,
        )

    def wait_ready(self, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead_child() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        return False

    def dead_child(self) -> str | None:
        for name, process in self.children.items():
            if process.poll() is not None:
                return name
        return None

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        say("stopping web, worker and beat ...")
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in self.children.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in time; killing it")
                process.kill()
                process.wait()
            # Each child leads its own process group (start_new_session): whatever it
            # started and left behind (a worker's pool processes after a kill) goes too, or
            # it would hold the data folder and our stdout open after we are gone.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(OSError):
            (self.home / "runtime.json").unlink()
        if self.lock is not None:
            self.lock.close()
        say(f"stopped; data kept in {self.home}")


def main() -> int:
    home = Path(os.environ.get("AGENTFLOW_HOME") or ROOT / ".agentflow").resolve()
    supervisor = Supervisor(
        home=home,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )
    if not supervisor.acquire_lock():
        return 1

    def _on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    # Explicitly, not Python's default: a process started with SIGINT ignored (a background
    # job of a non-interactive shell, as CI runs) keeps ignoring it, and Ctrl-C sent to us
    # would then never stop the platform.
    signal.signal(signal.SIGINT, _on_signal)
    env = {
        **os.environ,
        "AGENTFLOW_HOME": str(home),
        "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    try:
        supervisor.start_services(env)
        say("applying migrations ...")
        supervisor.manage(env, "migrate", "--noinput", "--verbosity", "0")
        supervisor.manage(env, "bootstrap_admin", "--url", supervisor.url)
        demo = env.get("AGENTFLOW_DEMO", "1") != "0"
        if demo:
            # First start of this data folder: tenant Acme, its agent, reviewer and operator
            # (prints the key and passwords once); later starts only remind how to log in.
            supervisor.manage(env, "demo_seed", "--once", "--url", supervisor.url)
        supervisor.start_children(env)
        if not supervisor.wait_ready():
            say(f"the platform did not become ready (dead: {supervisor.dead_child() or 'none'})")
            return 1
        say(f"AgentFlow is up at {supervisor.url} (in {time.monotonic() - started:.1f}s)")
        say(f"API docs: {supervisor.url}/api/docs/  health: {supervisor.url}/readyz")
        if demo:
            say(f"dashboard: {supervisor.url}/login/ (demo logins printed above)")
            say("demo traffic: .venv/bin/python manage.py demo_traffic")
        say("press Ctrl-C to stop")
        while True:
            dead = supervisor.dead_child()
            if dead is not None:
                say(f"{dead} exited unexpectedly; shutting everything down")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as exc:
        say(f"start-up step failed: {' '.join(map(str, exc.cmd))}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
