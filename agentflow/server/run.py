"""``make run``: the whole platform in one terminal.

Starts the embedded PostgreSQL+pgvector and Redis (unless ``DATABASE_URL`` /
``REDIS_URL`` point elsewhere), migrates, makes sure an admin account exists, seeds
the demo tenant on the first start (``AGENTFLOW_DEMO=0`` skips it), then supervises
the ASGI web server, the two Celery workers (``runner`` for runs, ``worker`` for the
rest: see :func:`worker_commands`) and Celery beat like a process manager: any of them
or Redis that dies is restarted with backoff (logged, counted in
``runtime.json``), and only Ctrl-C (or SIGTERM) stops everything: the children first,
then Redis, then PostgreSQL, keeping the data under ``AGENTFLOW_HOME`` for the next
start. A lock file makes a second ``make run`` on the same data folder refuse instead of
corrupting it.
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
RUN_QUEUE = "runs"
TASK_QUEUES = "default,hitl,learning,webhooks,maintenance"
# h11 with a 1 MiB request head: httptools refuses URLs over 64 KiB itself with a plain-text
# 400, before Django can answer an over-long query string with 414 in the error shape.
UVICORN_HTTP_OPTIONS = ("--http", "h11", "--h11-max-incomplete-event-size", "1048576")
_PR_SET_PDEATHSIG = 1
# The runner's consumer thread handles every run's message: without the worker-to-worker
# chatter (gossip and mingle on the broadcast channel, an event heartbeat every 2 s) it spends
# its CPU on runs. Nothing here reads them: health is `celery inspect ping` (remote control,
# kept) and beat's own heartbeat task; revokes are not used (issue 15).
RUNNER_FLAGS = ("--without-gossip", "--without-mingle", "--without-heartbeat")
# glibc gives threads up to 8 malloc arenas per core, and the runner's hundreds of threads
# fragment them: its largest RSS varied 255-314 MB between identical benchmark runs (10,000
# sessions; SPEC 13 allows 300). Two arenas: 249-271 MB at the same runs/s and CPU per run
# (bench/api.py, back to back, issue 15). The environment's own value wins.
RUNNER_MALLOC_ARENAS = "2"


def child_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """The environment program `name` starts with: the runner's malloc arenas capped."""
    if name != "runner":
        return env
    return {**env, "MALLOC_ARENA_MAX": env.get("MALLOC_ARENA_MAX", RUNNER_MALLOC_ARENAS)}


def worker_commands(env: dict[str, str], *, loglevel: str = "INFO") -> dict[str, list[str]]:
    """The two Celery workers of a box, by the work they do (issue 15).

    ``runner`` executes runs: a threads pool whose threads only wait while their runs are
    coroutines on the process's event loop (``agentflow.core.worker_loop``), so it holds
    ``RUN_CONCURRENCY`` runs in flight and takes no more (prefetch 1 per slot): an LLM's
    latency costs memory, not throughput. ``worker`` runs everything else (reviews'
    follow-ups, learning, webhooks, sweeps) in ``WORKER_CONCURRENCY`` forked processes,
    which suits their CPU work (embeddings). More of either, on more machines, scales out.
    """
    celery = [sys.executable, "-m", "celery", "-A", "agentflow.server.celery", "worker"]
    host = os.uname().nodename
    common = ["--loglevel", loglevel]
    return {
        "worker": [
            *celery,
            *("--queues", TASK_QUEUES, "--concurrency", env.get("WORKER_CONCURRENCY", "2")),
            *(*common, "--hostname", f"worker@{host}"),
        ],
        "runner": [
            *celery,
            *("--queues", RUN_QUEUE, "--pool", "threads"),
            *("--concurrency", env.get("RUN_CONCURRENCY", "200"), "--prefetch-multiplier", "1"),
            *(*RUNNER_FLAGS, *common, "--hostname", f"runner@{host}"),
        ],
    }


def say(message: str) -> None:
    print(f"agentflow | {message}", flush=True)


def die_with_parent() -> None:
    """Children get SIGTERM if the supervisor itself is killed (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised program: how to start it, and its restart bookkeeping."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures_in_a_row: int = 0
    restart_at: float | None = None  # set while it waits out its backoff


# A child up this long before it died is not crash-looping: its backoff starts afresh.
STABLE_SECONDS = 60.0
_MAX_RESTART_DELAY = 30.0


def restart_delay(failures_in_a_row: int, base: float) -> float:
    """Exponential backoff: base, 2 x base, 4 x base, ... capped at 30 s."""
    return float(min(_MAX_RESTART_DELAY, base * 2 ** max(0, failures_in_a_row - 1)))


@dataclass
class Supervisor:
    home: Path
    host: str
    port: int
    children: dict[str, Child] = field(default_factory=dict)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    redis_child: Child | None = None
    lock: IO[str] | None = None
    stopping: bool = False
    env: dict[str, str] = field(default_factory=dict)
    owner_url: str = ""
    restart_base: float = 1.0

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
            # The superuser owns the schema and migrates; the app runs as its own role,
            # which `migrate` creates and grants (no TRUNCATE of the audit log).
            self.owner_url = env["DATABASE_OWNER_URL"] = self.postgres.start()
            env["DATABASE_URL"] = self.postgres.runtime_url()
            say(f"PostgreSQL 16 + pgvector (embedded) ready in {time.monotonic() - started:.1f}s")
        else:
            self.owner_url = env.get("DATABASE_OWNER_URL", "")
            say("using DATABASE_URL from the environment")
        if not env.get("REDIS_URL"):
            started = time.monotonic()
            self.redis = EmbeddedRedis(self.home / "redis")
            env["REDIS_URL"] = self.redis.start()
            say(f"Redis (embedded) ready in {time.monotonic() - started:.1f}s")
        else:
            say("using REDIS_URL from the environment")
        if self.redis is not None:
            self.redis_child = Child("redis", [], started_at=time.monotonic())
        self.env = env
        self.write_runtime()

    def write_runtime(self) -> None:
        """runtime.json: where the services are, and how often each was restarted."""
        runtime = {
            "database_url": self.env["DATABASE_URL"],
            "database_owner_url": self.owner_url,
            "redis_url": self.env["REDIS_URL"],
            "pid": os.getpid(),
            "url": self.url,
            "restarts": {child.name: child.restarts for child in self._supervised()},
        }
        runtime_file = self.home / "runtime.json"
        runtime_file.write_text(json.dumps(runtime, indent=2), encoding="utf-8")
        runtime_file.chmod(0o600)

    def _supervised(self) -> list[Child]:
        return [*self.children.values(), *([self.redis_child] if self.redis_child else [])]

    def manage(self, env: dict[str, str], *args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)  # noqa: S603

    def migrate(self, env: dict[str, str]) -> None:
        """Migrations as the schema's owner (when there is one), which provisions the app role."""
        owner = {**env, "AGENTFLOW_DB_ROLE": "owner"} if env.get("DATABASE_OWNER_URL") else env
        self.manage(owner, "migrate", "--noinput", "--verbosity", "0")

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        child = self.children.setdefault(name, Child(name, argv))
        child.process = subprocess.Popen(  # noqa: S603 - our own argv
            child.argv, cwd=ROOT, env=env, preexec_fn=die_with_parent, start_new_session=True
        )
        child.started_at = time.monotonic()

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
                *UVICORN_HTTP_OPTIONS,
            ],
            env,
        )
        for name, argv in worker_commands(env).items():
            self.spawn(name, argv, child_env(name, env))
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
        for name, child in self.children.items():
            if child.process is not None and child.process.poll() is not None:
                return name
        return None

    # -- supervision ----------------------------------------------------------
    def supervise(self) -> None:
        """One round: notice what died, restart what has waited out its backoff."""
        now = time.monotonic()
        for child in self._supervised():
            if child.restart_at is None:
                code = self._exit_code(child)
                if code is not None:
                    self._schedule_restart(child, code, now)
            elif now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                self._restart(child)
                self.write_runtime()

    def _exit_code(self, child: Child) -> int | None:
        if child is self.redis_child:
            assert self.redis is not None
            return None if self.redis.running else self.redis.exit_code()
        return None if child.process is None else child.process.poll()

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        if child.process is not None:
            # Whatever it left behind (a killed worker's pool processes) goes with it:
            # orphans would hold leases and connections of work that is being recovered.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
        stable = now - child.started_at >= STABLE_SECONDS
        child.failures_in_a_row = 1 if stable else child.failures_in_a_row + 1
        delay = restart_delay(child.failures_in_a_row, self.restart_base)
        child.restart_at = now + delay
        say(
            f"{child.name} exited unexpectedly (code {code}); "
            f"restart #{child.restarts + 1} in {delay:.0f}s"
        )

    def _restart(self, child: Child) -> None:
        try:
            if child is self.redis_child:
                assert self.redis is not None
                self.redis.start()  # same socket and AOF: queued work is still there
                child.started_at = time.monotonic()
            else:
                self.spawn(child.name, child.argv, child_env(child.name, self.env))
        except (OSError, RuntimeError) as exc:
            say(f"{child.name} could not be restarted: {exc}")
            child.started_at = time.monotonic()
            self._schedule_restart(child, -1, child.started_at)
            return
        say(f"{child.name} restarted (restart #{child.restarts})")

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        say("stopping web, workers and beat ...")
        running = {n: c.process for n, c in self.children.items() if c.process is not None}
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name, process in running.items():
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


def fresh_metrics_dir(path: Path) -> str:
    """prometheus-client's multiprocess folder, emptied: the web and every worker write their
    counters there and /metrics sums them; a new start counts from zero, as Prometheus expects
    of counters after a restart."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return str(path)


def main() -> int:
    home = Path(os.environ.get("AGENTFLOW_HOME") or ROOT / ".agentflow").resolve()
    supervisor = Supervisor(
        home=home,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        restart_base=float(os.environ.get("AGENTFLOW_RESTART_DELAY_SECONDS", "1")),
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
        "PROMETHEUS_MULTIPROC_DIR": fresh_metrics_dir(
            Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or home / "prometheus")
        ),
    }
    started = time.monotonic()
    try:
        supervisor.start_services(env)
        say("applying migrations ...")
        supervisor.migrate(env)
        # The children run as the app's role only: the owner's URL stays with us.
        env.pop("DATABASE_OWNER_URL", None)
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
            supervisor.supervise()
            time.sleep(0.25)
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
