"""`python -m agentflow.server.web`: web workers with a listening socket each (issue 15).

uvicorn's own `--workers` shares one socket, and keep-alive clients that connect together
could all land on one worker (bench/api.py: one worker at a full core, the other idle). The
launcher binds a socket per worker with SO_REUSEPORT; the kernel spreads the connections.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from agentflow.server.run import UVICORN_HTTP_OPTIONS
from agentflow.server.web import listening_sockets

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(*options: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentflow.server.settings"}
    env["AGENTFLOW_RESTART_DELAY_SECONDS"] = "0.2"
    argv = [sys.executable, "-m", "agentflow.server.web", *options]
    return subprocess.Popen(argv, cwd=ROOT, env=env)


def _healthz(port: int) -> int:
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def _workers(launcher: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(launcher.pid).children()


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not listening yet, or a worker just killed
            if condition():
                return
        time.sleep(0.2)
    raise AssertionError("timed out")


def _all_answer(port: int, launcher: subprocess.Popen[bytes]) -> bool:
    """Both workers run, and ten /healthz on fresh connections (spread by the kernel) answer."""
    workers = {worker.pid for worker in _workers(launcher)}
    return len(workers) == 2 and all(_healthz(port) == 200 for _ in range(10))


@pytest.fixture
def launcher() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    process = _launch(
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--lifespan", "off",
        "--log-level", "warning", *UVICORN_HTTP_OPTIONS,
    )  # fmt: skip
    try:
        yield process, port
    finally:
        if process.poll() is None:
            workers = _workers(process)
            process.kill()  # its workers get SIGTERM from the kernel (PR_SET_PDEATHSIG)
            process.wait()
            psutil.wait_procs(workers, timeout=30)


def _connections_per_worker(launcher: subprocess.Popen[bytes], port: int) -> list[int]:
    return sorted(
        sum(
            1
            for conn in worker.net_connections(kind="tcp")
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port
        )
        for worker in _workers(launcher)
    )


def test_workers_share_connections_restart_and_stop(
    launcher: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = launcher
    _wait_for(lambda: _all_answer(port, process))

    # Clients that connect together are spread over both workers by the kernel.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)]
    try:
        _wait_for(lambda: sum(_connections_per_worker(process, port)) == CLIENTS, 10)
        counts = _connections_per_worker(process, port)
    finally:
        for client in clients:
            client.close()
    assert counts[0] >= CLIENTS // 5, counts  # binomial(40, 1/2): under 8 is ~1 in 30,000

    # A worker killed with -9 is restarted on its socket; the port keeps answering.
    victim = _workers(process)[0]
    victim.kill()
    _wait_for(lambda: victim.pid not in {w.pid for w in _workers(process)} and
              _all_answer(port, process))  # fmt: skip
    assert process.poll() is None

    # SIGTERM stops the workers, then the launcher, cleanly.
    workers = _workers(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--workers", "0"), "--workers must be 1 or more"),
        (("--fd", "3"), "--fd, --uds and --reload are uvicorn's own"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(
    options: tuple[str, ...], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentflow.server.web", "--port", "0", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_the_production_image_and_compose_start_the_launcher() -> None:
    for name in ("Dockerfile", "docker-compose.yml"):
        text = (ROOT / name).read_text()
        assert '"agentflow.server.web"' in text, name
        assert '"uvicorn", "agentflow.server.asgi:application"' not in text, name


def test_the_sockets_share_one_port_and_send_at_once() -> None:
    """SO_REUSEPORT joins them on one port; TCP_NODELAY, which accepted connections inherit,
    keeps a response's body from waiting for the client's delayed ACK of its head (uvicorn
    takes `--fd` for a Unix socket and does not set it: /healthz fell to ~1,000/s)."""
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        assert len({sock.getsockname() for sock in sockets}) == 1
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.get_inheritable()
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_taken_by_another_program_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "agentflow.server.web", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"agentflow web | cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
