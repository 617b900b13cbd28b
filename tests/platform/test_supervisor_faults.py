"""``make run`` survives dead processes and a dead Redis without losing accepted work.

Issue 13: a kill -9 of the worker's main process used to stop the whole platform, and the
runs it held waited 15 minutes; a kill -9 of Redis made every request a 500. Here the
supervisor of ``make run`` is started as a user starts it (embedded PostgreSQL and Redis,
the demo tenant), then hurt while it works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.platform.test_run_command import _free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
SETTLED = ("completed", "awaiting_review", "failed", "cancelled")


@dataclass
class Platform:
    process: subprocess.Popen[str]
    home: Path
    url: str
    key: str = ""
    agent_id: str = ""
    output: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz")[0] == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def database(self) -> psycopg.Connection[Any]:
        runtime = json.loads((self.home / "runtime.json").read_text())
        return psycopg.connect(runtime.get("database_owner_url") or runtime["database_url"])

    def child_pid(self, needle: str) -> int:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if parent == self.process.pid and needle in argv:
                return int(entry.name)
        raise AssertionError(f"no child of the supervisor runs {needle!r}")

    def seen(self, needle: str) -> bool:
        return any(needle in line for line in list(self.output))


def _wait(predicate: Any, timeout: float, what: str, platform: Platform) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    tail = "".join(platform.output[-40:])
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{tail}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("faults")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        {
            "AGENTFLOW_HOME": str(home),
            "PORT": str(port),
            "AGENTFLOW_ENV": "development",
            "WORKER_CONCURRENCY": "2",
            "RUN_RECOVERY_SECONDS": "2",
            "RUN_PENDING_GRACE_SECONDS": "10",
            "RUN_RECOVERY_BACKOFF_SECONDS": "10",
            # Long enough to watch the platform while Redis is down.
            "AGENTFLOW_RESTART_DELAY_SECONDS": "4",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.server.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    platform = Platform(process, home, f"http://127.0.0.1:{port}")

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            platform.output.append(line)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        _wait(lambda: platform.seen("AgentFlow is up"), 240, "make run to start", platform)
        platform.key = (home / "demo-api-key").read_text().strip()
        status, _, agents = platform.request("GET", "/api/v1/agents")
        assert status == 200, agents
        platform.agent_id = agents["results"][0]["id"]
        yield platform
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C: the only way it stops
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(10)
        if process.stdout is not None:
            process.stdout.close()


def _accept(platform: Platform, n: int) -> str:
    status, _, body = platform.request(
        "POST",
        f"/api/v1/agents/{platform.agent_id}/runs",
        {"user_id": f"burst-{n % 10}", "message": "How do I reset my password?"},
        {"Prefer": "respond-async"},
    )
    assert status == 202, (status, body)
    return str(body["id"])


def _unsettled(platform: Platform, run_ids: list[str]) -> int:
    with platform.database() as db:
        row = db.execute(
            "SELECT count(*) FROM agentflow_run WHERE id::text = ANY(%s) AND status <> ALL(%s)",
            [run_ids, list(SETTLED)],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _assert_settled_exactly_once(platform: Platform, run_ids: list[str]) -> None:
    with platform.database() as db:
        statuses = dict(
            db.execute(
                "SELECT status, count(*) FROM agentflow_run WHERE id::text = ANY(%s) "
                "GROUP BY status",
                [run_ids],
            ).fetchall()
        )
        assert set(statuses) <= {"completed", "awaiting_review"}, statuses
        doubled = db.execute(
            "SELECT run_id, count(*) FROM agentflow_message WHERE run_id::text = ANY(%s) "
            "AND role = 'assistant' GROUP BY run_id HAVING count(*) <> 1",
            [run_ids],
        ).fetchall()
        assert not doubled, doubled
        answered = db.execute(
            "SELECT count(DISTINCT run_id) FROM agentflow_message "
            "WHERE run_id::text = ANY(%s) AND role = 'assistant'",
            [run_ids],
        ).fetchone()
        assert answered == (len(run_ids),)
        settled_twice = db.execute(
            "SELECT run_id FROM agentflow_runtransition WHERE run_id::text = ANY(%s) "
            "AND to_status IN ('completed', 'awaiting_review') GROUP BY run_id "
            "HAVING count(*) > 1",
            [run_ids],
        ).fetchall()
        assert not settled_twice, settled_twice
        audited_twice = db.execute(
            "SELECT target_id FROM governance_auditevent WHERE target_id = ANY(%s) "
            "AND action IN ('run.completed', 'run.awaiting_review') GROUP BY target_id "
            "HAVING count(*) > 1",
            [run_ids],
        ).fetchall()
        assert not audited_twice, audited_twice


def test_a_killed_worker_is_restarted_and_its_runs_settle_once(platform: Platform) -> None:
    with ThreadPoolExecutor(8) as pool:
        run_ids = list(pool.map(lambda n: _accept(platform, n), range(50)))
    runner = platform.child_pid("runner")  # the worker that executes runs
    os.kill(runner, signal.SIGKILL)
    killed_at = time.monotonic()

    _wait(lambda: platform.seen("runner restarted"), 30, "the runner's restart", platform)
    ready_after = _wait(platform.ready, 30, "/readyz 200 after the kill", platform)
    settled_after = _wait(
        lambda: _unsettled(platform, run_ids) == 0, 90, "the burst to settle", platform
    )
    print(
        f"worker killed: ready again {ready_after:.1f}s, all 50 settled "
        f"{time.monotonic() - killed_at:.1f}s after the kill ({settled_after:.1f}s waited)"
    )
    _assert_settled_exactly_once(platform, run_ids)
    assert platform.process.poll() is None, "the supervisor stopped"
    runtime = json.loads((platform.home / "runtime.json").read_text())
    assert runtime["restarts"]["runner"] == 1


def test_redis_down_keeps_reads_and_accepts_work_then_comes_back(platform: Platform) -> None:
    pid = int((platform.home / "redis" / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: platform.seen("redis exited unexpectedly"), 10, "the supervisor", platform)

    status, _, body = platform.request("GET", "/readyz")
    assert status == 503, body
    assert "redis" in body["failing"], body
    # Reads that need only PostgreSQL keep working.
    status, _, agents = platform.request("GET", "/api/v1/agents")
    assert status == 200, agents
    # Work is accepted into PostgreSQL (201/202, never a 500) and not lost.
    status, _, body = platform.request(
        "POST",
        f"/api/v1/agents/{platform.agent_id}/runs",
        {"user_id": "during-outage", "message": "How do I reset my password?"},
    )
    assert status == 202, (status, body)
    accepted = [str(body["id"])]
    assert not platform.seen("Internal Server Error")

    _wait(lambda: platform.seen("redis restarted"), 30, "Redis to be restarted", platform)
    _wait(platform.ready, 30, "/readyz 200 after Redis is back", platform)
    _wait(lambda: _unsettled(platform, accepted) == 0, 60, "the accepted run", platform)
    _assert_settled_exactly_once(platform, accepted)
    runtime = json.loads((platform.home / "runtime.json").read_text())
    assert runtime["restarts"]["redis"] == 1
