"""post_to_slack against a real local HTTP server: an error answer's response (and socket) is
closed at once, even while the raised error is still referenced.

The ``HTTPError`` urllib raises holds the open response. A retried task keeps the error in a
reference cycle, and when the garbage collector broke it the socket could be finalised first:
"unclosed <socket.socket [closed] ...>" surfaced as an error in an unrelated test in CI.
"""

from __future__ import annotations

import threading
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hitl.notifications import SlackRejected, SlackUnavailable, post_to_slack


@pytest.fixture
def answering() -> Iterator[Any]:
    """A server answering every POST with the status in its path (/404, /503)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(int(self.path.strip("/")))
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"error")

        def log_message(self, *args: Any) -> None:
            """Quiet: the test reads what the client raised."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lambda status: f"http://127.0.0.1:{server.server_address[1]}/{status}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(("status", "raised"), [(404, SlackRejected), (503, SlackUnavailable)])
def test_an_error_answer_is_closed_at_once(
    answering: Any, status: int, raised: type[Exception]
) -> None:
    with pytest.raises(raised, match=str(status)) as error:
        post_to_slack(answering(status), "hello")
    cause = error.value.__cause__  # still referenced, as a retried task keeps it
    assert isinstance(cause, urllib.error.HTTPError)
    assert cause.fp.closed, "the response (and its socket) stayed open behind the error"
