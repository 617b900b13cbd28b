"""The ASGI application's HTTP handler runs the middleware chain and the view in one hop.

Django's own ASGI handler hands each sync part of the chain (our middleware, CSRF's
``process_view``, the view, the error log) to a thread on its own; each hop costs a
wake-up of a thread and of the event loop (issue 15). These requests go through the real
ASGI application, as uvicorn calls it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref import sync

from agentflow.server.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def _get(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[dict[str, Any]] = []
    requested = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def _hops_and_response(
    monkeypatch: pytest.MonkeyPatch, path: str, **kwargs: Any
) -> tuple[int, int, bytes]:
    hops: list[int] = []
    original = sync.SyncToAsync.__call__

    async def counted(self: sync.SyncToAsync[Any, Any], *args: Any, **kw: Any) -> Any:
        hops.append(threading.get_ident())
        return await original(self, *args, **kw)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    status, body = asyncio.run(_get(path, **kwargs))
    return len(hops), status, body


def test_a_request_takes_three_thread_hops(monkeypatch: pytest.MonkeyPatch) -> None:
    """request_started, the whole chain with the view, and closing the response."""
    hops, status, body = _hops_and_response(monkeypatch, "/healthz")
    assert (status, body) == (200, b'{"status": "ok"}')
    assert hops == 3  # Django's handler: 5


def test_an_error_response_takes_no_extra_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 is logged inside the chain's hop, not in one more (Django's handler: 7)."""
    hops, status, body = _hops_and_response(
        monkeypatch, "/api/v1/agents", headers=[(b"authorization", b"Bearer af_bad_key")]
    )
    assert status == 401, body
    assert b"error_type" in body
    assert hops == 3
