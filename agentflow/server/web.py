"""``python -m agentflow.server.web``: the web server as N uvicorn processes on one port.

``uvicorn --workers N`` gives its workers one shared listening socket, and a worker's event
loop accepts every connection waiting when it wakes. Keep-alive clients that connect
together can therefore all land on one worker: in ``bench/api.py --phases ack
--web-workers 2`` one worker served 50 clients at a full core while the other idled, 145
acknowledgements/s in all, what one worker does alone (issue 15). Here each worker listens
on a socket of its own, all bound to the address with ``SO_REUSEPORT``, and the kernel
spreads incoming connections over them.

This process creates the sockets and keeps them, starts ``uvicorn --fd`` on each, restarts
a worker that dies (the backoff of ``make run``; connections that reach its socket
meanwhile wait in its queue for the new worker), and stops the workers on SIGTERM or
SIGINT. A second launcher of the same user on the same port would join the group and
share its connections (SO_REUSEPORT), where a plain uvicorn would refuse to start: in a
container each has its own network namespace. Options it does not know are uvicorn's,
passed to every worker::

    python -m agentflow.server.web --host 0.0.0.0 --port 8000 --workers 2 --proxy-headers
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from agentflow.server.run import STABLE_SECONDS, die_with_parent, restart_delay

APPLICATION = "agentflow.server.asgi:application"
_BACKLOG = 2048  # uvicorn's default
_STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.2


def say(message: str) -> None:
    print(f"agentflow web | {message}", file=sys.stderr, flush=True)


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on one address, the kernel spreading connections over them.

    With port 0 the first socket picks a free port and the others join it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted connections inherit it. uvicorn opens `--fd` as a Unix socket, so its
        # loop does not set it itself, and a response's body waited for the client's delayed
        # ACK of its head (~40 ms: /healthz fell from ~1,450 to ~1,000 per second).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.set_inheritable(True)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


@dataclass
class Worker:
    """One uvicorn process and the socket it serves, with its restart bookkeeping."""

    index: int
    sock: socket.socket
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures_in_a_row: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        fd = self.sock.fileno()
        self.process = subprocess.Popen(  # noqa: S603 - our own argv
            [*self.argv, "--fd", str(fd)],
            pass_fds=(fd,),
            preexec_fn=die_with_parent,
            start_new_session=True,  # a terminal's Ctrl-C reaches us only: one stop each
        )
        self.started_at = time.monotonic()


class Launcher:
    def __init__(self, workers: list[Worker], restart_base: float) -> None:
        self.workers = workers
        self.restart_base = restart_base
        self.stopping = False

    def run(self) -> int:
        for worker in self.workers:
            worker.start()
        while not self.stopping:
            self.supervise(time.monotonic())
            time.sleep(_POLL_SECONDS)
        self.stop_workers()
        return 0

    def supervise(self, now: float) -> None:
        for worker in self.workers:
            assert worker.process is not None
            if worker.restart_at is None:
                code = worker.process.poll()
                if code is not None:
                    self._schedule_restart(worker, code, now)
            elif now >= worker.restart_at:
                worker.restart_at = None
                worker.start()
                say(f"worker {worker.index} restarted")

    def _schedule_restart(self, worker: Worker, code: int, now: float) -> None:
        stable = now - worker.started_at >= STABLE_SECONDS
        worker.failures_in_a_row = 1 if stable else worker.failures_in_a_row + 1
        delay = restart_delay(worker.failures_in_a_row, self.restart_base)
        worker.restart_at = now + delay
        say(f"worker {worker.index} exited unexpectedly (code {code}); restart in {delay:.0f}s")

    def stop_workers(self) -> None:
        running = [w.process for w in self.workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)  # uvicorn finishes its requests, then exits
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def request_stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m agentflow.server.web",
        description="The web server as several uvicorn processes, each with its own socket.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--app", default=APPLICATION)
    options, uvicorn_options = parser.parse_known_args(argv)
    if options.workers < 1:
        parser.error("--workers must be 1 or more")
    if any(flag in uvicorn_options for flag in ("--fd", "--uds", "--reload")):
        parser.error("--fd, --uds and --reload are uvicorn's own; this launcher makes sockets")
    return options, uvicorn_options


def main(argv: list[str] | None = None) -> int:
    options, uvicorn_options = parse(sys.argv[1:] if argv is None else argv)
    try:
        sockets = listening_sockets(options.host, options.port, options.workers)
    except OSError as exc:  # the port is taken (without SO_REUSEPORT), or not ours to bind
        say(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}")
        return 1
    port = sockets[0].getsockname()[1]
    argv_base = [sys.executable, "-m", "uvicorn", options.app, *uvicorn_options]
    workers = [Worker(i + 1, sock, argv_base) for i, sock in enumerate(sockets)]
    base = float(os.environ.get("AGENTFLOW_RESTART_DELAY_SECONDS", "1") or 1)
    launcher = Launcher(workers, restart_base=base)
    signal.signal(signal.SIGTERM, launcher.request_stop)
    signal.signal(signal.SIGINT, launcher.request_stop)
    say(f"{options.workers} worker(s) on http://{options.host}:{port}, a socket each")
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
