"""The README's run command as a user runs it: up, ready, single instance, clean stop, data kept."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agentflow.server.run import child_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(home: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        {
            "AGENTFLOW_HOME": str(home),
            "PORT": str(port),
            "AGENTFLOW_ENV": "development",
            "HEARTBEAT_SECONDS": "1",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "agentflow.server.run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(lines)}")


def _get_json(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def _stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C, and the supervisor's whole output; on a hang, its last lines in the failure."""
    process.send_signal(signal.SIGINT)
    try:
        # Children get 20 s, then Redis and PostgreSQL stop: slow on a loaded machine.
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        raw = exc.output or b""
        seen = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        tail = "\n".join(seen.splitlines()[-40:])
        raise AssertionError(f"make run did not stop within 120 s after Ctrl-C:\n{tail}") from None
    return output


def _child_environ(parent: int, marker: str) -> dict[str, str]:
    """The environment of `parent`'s child process whose command line contains `marker`."""
    pids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True)
    for pid in pids.stdout.split():
        proc = Path("/proc") / pid.decode()
        if marker.encode() in (proc / "cmdline").read_bytes():
            pairs = (item.partition(b"=") for item in (proc / "environ").read_bytes().split(b"\0"))
            return {key.decode(): value.decode() for key, _, value in pairs if key}
    raise AssertionError(f"no child of {parent} runs {marker!r}")


def _children_alive(home: Path) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return str(home) in out


def test_run_brings_the_platform_up_and_stops_it_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    process = _start(home, port)
    try:
        lines = _wait_for_line(process, "AgentFlow is up", timeout=120)
        assert any("created admin account" in line for line in lines)
        # First start seeds the demo: its key and logins are printed once.
        assert any("demo API key" in line for line in lines), "".join(lines)
        assert any("reviewer / " in line for line in lines)
        assert (home / "demo-api-key").exists()
        status, body = _get_json(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        # The runner's threads share two malloc arenas (docs/operations.md); the rest do not.
        arenas = os.environ.get("MALLOC_ARENA_MAX")
        assert _child_environ(process.pid, "runner@").get("MALLOC_ARENA_MAX") == (arenas or "2")
        assert _child_environ(process.pid, "worker@").get("MALLOC_ARENA_MAX") == arenas

        # Worker and beat are alive: beat's heartbeat, run by the worker, lands in Redis.
        env = {**os.environ, "AGENTFLOW_HOME": str(home)}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        ping = subprocess.run(
            [sys.executable, "manage.py", "ping_workers", "--timeout", "30", "--require-beat"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ping.returncode == 0, ping.stderr
        report = json.loads(ping.stdout)
        assert report["worker_round_trip_ms"] > 0
        assert report["beat_last_heartbeat_age_s"] is not None
        # The worker's counters reach the web's /metrics (multiprocess mode): the ping's task.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        assert 'outcome="ok",task="maintenance.echo_context"' in scraped

        second = subprocess.run(
            [sys.executable, "-m", "agentflow.server.run"],
            cwd=ROOT,
            env={**env, "PORT": str(_free_port())},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "already running" in second.stdout
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert "data kept" in output
    assert not (home / "runtime.json").exists()
    time.sleep(1)
    assert not _children_alive(home), "a child process outlived the supervisor"

    # Next start reuses the data: the admin account already exists.
    process = _start(home, port)
    try:
        lines = _wait_for_line(process, "AgentFlow is up", timeout=120)
        assert any("admin account exists" in line for line in lines)
        assert any("seeded before" in line for line in lines)
        assert not any("demo API key" in line for line in lines)
    finally:
        _stop(process)
    assert process.returncode == 0


def test_an_operators_malloc_arena_max_wins_over_the_runners_default() -> None:
    assert child_env("runner", {"MALLOC_ARENA_MAX": "8"})["MALLOC_ARENA_MAX"] == "8"
    assert child_env("runner", {})["MALLOC_ARENA_MAX"] == "2"
