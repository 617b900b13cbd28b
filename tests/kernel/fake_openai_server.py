"""A real local HTTP server that speaks enough of the OpenAI API for tests.

It listens on 127.0.0.1 on a free port in a background thread, answers
``POST /v1/chat/completions`` and ``POST /v1/embeddings`` from a script, and records every
request it received, so tests can check what reached the "LLM" (retries, redaction, ...)::

    with FakeOpenAIServer() as srv:
        srv.enqueue(rate_limited(retry_after="0.01"), chat_completion("Hello!"))
        provider = OpenAIProvider("gpt-4o-mini", api_key="test", base_url=srv.base_url)
        ...
        assert len(srv.requests) == 2
        assert "alice@example.com" not in srv.sent_text()

Scripted responses are served first in, first out, whatever the endpoint; when the queue is
empty the server answers by itself (a short chat answer with usage, or deterministic
embeddings), so tests that only inspect requests need no script.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.kernel.llm.openai_provider import OpenAIProvider

__all__ = [
    "FakeOpenAIServer",
    "RecordedRequest",
    "ScriptedResponse",
    "chat_completion",
    "embeddings",
    "error",
    "rate_limited",
    "slow",
]

Body = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]]


@dataclass(frozen=True)
class ScriptedResponse:
    """One answer: status, JSON body (or a function of the request body), headers, delay.

    ``raw_body`` sends bytes as they are (e.g. malformed JSON). ``delay_seconds`` waits before
    answering, to outlast a client timeout.
    """

    status: int = 200
    body: Body | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    raw_body: bytes | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []

    def text(self) -> str:
        """Every piece of text this request carried to the model."""
        if not isinstance(self.body, dict):
            return self.raw.decode("utf-8", "replace")
        parts: list[str] = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
            for call in message.get("tool_calls") or ():
                parts.append(str(call.get("function", {}).get("arguments", "")))
        inputs = self.body.get("input")
        if isinstance(inputs, str):
            parts.append(inputs)
        elif isinstance(inputs, list):
            parts.extend(str(i) for i in inputs)
        return "\n".join(parts)


# ----------------------------------------------------------------- response factories


def chat_completion(
    content: str | None = "ok",
    *,
    tool_calls: Iterable[Mapping[str, Any]] | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    model: str = "gpt-4o-mini",
    finish_reason: str | None = None,
    include_usage: bool = True,
) -> ScriptedResponse:
    """A chat completion. ``tool_calls`` items: ``{"name": ..., "arguments": {...} | str}``."""
    calls = [
        {
            "id": call.get("id", f"call_{i}"),
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": call["arguments"]
                if isinstance(call["arguments"], str)
                else json.dumps(call["arguments"]),
            },
        }
        for i, call in enumerate(tool_calls or ())
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
    }
    if include_usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return ScriptedResponse(body=body)


def embeddings(
    vectors: list[list[float]] | None = None,
    *,
    dimensions: int = 8,
    prompt_tokens: int | None = None,
    model: str = "text-embedding-3-small",
) -> ScriptedResponse:
    """Given vectors, or deterministic ones derived from each input text."""

    def build(request: Any) -> Mapping[str, Any]:
        inputs = request.get("input") if isinstance(request, dict) else None
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        rows = vectors if vectors is not None else [_vector(str(t), dimensions) for t in texts]
        as_base64 = isinstance(request, dict) and request.get("encoding_format") == "base64"
        tokens = prompt_tokens if prompt_tokens is not None else sum(len(str(t)) for t in texts)
        return {
            "object": "list",
            "model": model,
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _b64(row) if as_base64 else row,
                }
                for i, row in enumerate(rows)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return ScriptedResponse(body=build)


def error(
    status: int, message: str = "scripted failure", *, headers: Mapping[str, str] | None = None
) -> ScriptedResponse:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "error"
    return ScriptedResponse(
        status=status,
        body={"error": {"message": message, "type": kind, "code": None, "param": None}},
        headers=dict(headers or {}),
    )


def rate_limited(retry_after: str | None = "1") -> ScriptedResponse:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return error(429, "Rate limit reached", headers=headers)


def slow(seconds: float, response: ScriptedResponse | None = None) -> ScriptedResponse:
    base = response or chat_completion("late answer")
    return ScriptedResponse(
        status=base.status,
        body=base.body,
        headers=base.headers,
        delay_seconds=seconds,
        raw_body=base.raw_body,
    )


def _vector(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128 for i in range(dimensions)]


def _b64(row: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(row)}f", *row)).decode()


# ---------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's listen backlog is 5: a burst of a hundred runs connecting at once
    # overflowed it on a loaded machine, the connections failed and the provider's breaker
    # opened. Real servers listen with a backlog of 1024-2048 (uvicorn, gunicorn, nginx).
    request_queue_size = 1024
    owner: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # the client gave up (timeouts are part of the script): not a server bug
        if exc is not None:
            self.owner.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # never let a stuck client pin a handler thread forever

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, raw: bytes) -> None:
        owner = self.server.owner
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        scripted = owner._next(request)
        if scripted.delay_seconds > 0 and owner._closing.wait(scripted.delay_seconds):
            return  # the server is stopping: drop the connection
        if scripted.raw_body is not None:
            payload = scripted.raw_body
        else:
            content = scripted.body(body) if callable(scripted.body) else scripted.body
            payload = json.dumps(content if content is not None else {}).encode()
        self.send_response(scripted.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in scripted.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FakeOpenAIServer:
    """OpenAI-compatible test server; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        default: ScriptedResponse | Callable[[RecordedRequest], ScriptedResponse] | None = None,
    ) -> None:
        self._default = default
        self._queue: deque[ScriptedResponse] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    # lifecycle
    def start(self) -> FakeOpenAIServer:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # addresses
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to the OpenAI SDK (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # script
    def enqueue(self, *responses: ScriptedResponse) -> None:
        with self._lock:
            self._queue.extend(responses)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # what was received
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def sent_text(self) -> str:
        """All text every request carried to the model, joined: for "never leaked" checks."""
        return "\n".join(r.text() for r in self.requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    def _next(self, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self._requests.append(request)
            if self._queue:
                return self._queue.popleft()
        if callable(self._default):
            return self._default(request)
        if self._default is not None:
            return self._default
        return _automatic(request)


def _automatic(request: RecordedRequest) -> ScriptedResponse:
    path = request.path.split("?", 1)[0].rstrip("/")
    if request.method == "POST" and path.endswith("/chat/completions"):
        prompt = max(len(request.text()) // 4, 1)
        return chat_completion("ok", prompt_tokens=prompt, completion_tokens=1)
    if request.method == "POST" and path.endswith("/embeddings"):
        dims = request.body.get("dimensions") if isinstance(request.body, dict) else None
        return embeddings(dimensions=int(dims or 8))
    return error(404, f"no such endpoint: {request.method} {request.path}")


# ------------------------------------------------------- a server that holds calls open


class HeldOpenAIServer:
    """OpenAI-compatible server that answers every chat completion after ``latency`` seconds.

    For load (``bench/api.py --llm-latency 2``): one asyncio loop, a coroutine per
    connection (HTTP/1.1 keep-alive), so hundreds of calls can be held open at once where
    a thread per call would not scale. It counts chat completions in flight and the most
    seen at once; ``GET /_stats`` returns those counters and ``POST /_stats/reset`` zeroes
    the maximum, so a benchmark can read them when the server runs in another process::

        python -m tests.kernel.fake_openai_server --latency 2 --port 8765

    Embeddings are answered at once (deterministic vectors, as the scripted server does).
    """

    def __init__(self, latency: float, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = latency
        self.host = host
        self.port = port
        self.in_flight = 0
        self.max_in_flight = 0
        self.chat_completions = 0
        self.other_requests = 0
        self.connections = 0
        self.max_connections = 0

    def stats(self) -> dict[str, Any]:
        return {
            "latency_s": self.latency,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "chat_completions": self.chat_completions,
            "other_requests": self.other_requests,
            "connections": self.connections,
            "max_connections": self.max_connections,
        }

    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until cancelled; ``ready(port)`` is called once it listens."""
        import asyncio

        server = await asyncio.start_server(self._connection, self.host, self.port, backlog=4096)
        self.port = int(server.sockets[0].getsockname()[1])
        if ready is not None:
            ready(self.port)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.connections += 1
        self.max_connections = max(self.max_connections, self.connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path, headers = _parse_head(head)
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                status, payload = await self._answer(method, path, raw)
                keep_alive = headers.get("connection", "").lower() != "close"
                writer.write(_response(status, payload, keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
        import asyncio

        path = path.split("?", 1)[0].rstrip("/")
        if path == "/_stats":
            if method == "POST":
                self.max_in_flight = self.in_flight
                self.max_connections = self.connections
            return 200, json.dumps(self.stats()).encode()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(method=method, path=path, headers={}, body=body, raw=raw)
        if method == "POST" and path.endswith("/chat/completions"):
            self.chat_completions += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.latency)
            finally:
                self.in_flight -= 1
        else:
            self.other_requests += 1
        scripted = _automatic(request)
        content = scripted.body(body) if callable(scripted.body) else scripted.body
        schema = _response_schema(body)
        if schema is not None and isinstance(content, dict) and content.get("choices"):
            # Structured output (e.g. the intent classifier): a valid instance of the schema.
            content["choices"][0]["message"]["content"] = json.dumps(_schema_instance(schema))
        return scripted.status, json.dumps(content if content is not None else {}).encode()


def _response_schema(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else None


def _schema_instance(schema: Mapping[str, Any]) -> Any:
    """The first value a JSON schema allows: enums' first member, 0.9 for numbers, ..."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _schema_instance(sub) for name, sub in properties.items()}
    defaults: dict[str, Any] = {
        "string": "ok",
        "number": 0.9,
        "integer": 1,
        "boolean": True,
        "array": [],
    }
    return defaults.get(str(kind))


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = [*lines[0].split(" ", 2), "", ""][:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _response(status: int, payload: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + payload


def main(argv: list[str] | None = None) -> int:
    """Run :class:`HeldOpenAIServer` in the foreground (uvloop when installed)."""
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(description=HeldOpenAIServer.__doc__)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per chat completion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = HeldOpenAIServer(args.latency, host=args.host, port=args.port)

    def ready(port: int) -> None:
        print(json.dumps({"listening": f"http://{args.host}:{port}/v1"}), flush=True)

    try:
        import uvloop

        uvloop.run(server.serve(ready))
    except ImportError:
        asyncio.run(server.serve(ready))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())


def strict_provider(server: FakeOpenAIServer, model: str = "gpt-4o-mini") -> OpenAIProvider:
    """An OpenAIProvider on ``server`` that fails fast: 2 s timeout, no SDK retries (the
    blueprint tests script each reply, so a retry would consume the next one)."""
    from agentflow.kernel.llm.openai_provider import OpenAIProvider

    return OpenAIProvider(
        model, api_key="test-key", base_url=server.base_url, timeout_seconds=2, max_retries=0
    )
