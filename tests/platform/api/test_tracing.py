"""OpenTelemetry: off and free without ``OTEL_EXPORTER_OTLP_ENDPOINT``; when on, a message
sent through the API is one trace from the HTTP request through the Celery task to the run
and its LLM call (GenAI attributes), recorded here by the SDK's in-memory exporter.

The LLM is a real local OpenAI-compatible server (tests/kernel/fake_openai_server.py), the
worker a real Celery worker. The tracer provider is process-global: the fixture installs
it for one test and takes it out again, so the rest of the suite runs untraced.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

from agentflow import AgentFrameworkBuilder
from agentflow.kernel import tracing as kernel_tracing
from agentflow.server import telemetry
from agentflow.services import create_agent
from tests.kernel.fake_openai_server import FakeOpenAIServer, chat_completion
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona

ROOT = Path(__file__).resolve().parents[3]
ANSWER = "Open Settings, then Security, then Reset password."


def _reset_global_provider() -> None:
    # The API sets its provider once per process; tests put it back (as OpenTelemetry's own
    # test utilities do) so that no other test is traced.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    # A fresh proxy: the kernel's module-level one must not stay bound to this provider.
    monkeypatch.setattr(kernel_tracing, "tracer", trace.get_tracer("agentflow"))
    provider = telemetry.configure_tracing("test", processor=SimpleSpanProcessor(exporter))
    assert isinstance(provider, TracerProvider)
    yield exporter
    telemetry.shutdown_tracing()
    _reset_global_provider()


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)

    assert telemetry.configure_tracing("web") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with kernel_tracing.run_span({"run_id": "r1"}) as span:
        assert not span.is_recording()  # a no-op span: no attributes are even computed


def _by_name(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    matching = [span for span in finished if span.name == name]
    assert len(matching) == 1, sorted(span.name for span in finished)
    return matching[0]


def _ancestors(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> list[str]:
    by_id = {s.context.span_id: s for s in finished}
    names, parent = [], span.parent
    while parent is not None and parent.span_id in by_id:
        names.append(by_id[parent.span_id].name)
        parent = by_id[parent.span_id].parent
    return names


@pytest.mark.django_db(transaction=True)
def test_one_trace_from_the_request_to_the_llm_call(
    spans: InMemorySpanExporter,
    owner: Persona,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    celery_worker_app: object,
) -> None:
    with FakeOpenAIServer(default=lambda _: chat_completion(ANSWER, prompt_tokens=42)) as llm:
        settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [llm.base_url]}
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        provider = {"kind": "openai", "model": "gpt-4o-mini", "base_url": llm.base_url}
        config = {
            **copy.deepcopy(SUPPORT_CONFIG),
            "default_threshold": 0.05,
            "llm": {"providers": [{**provider, "api_key": "${OPENAI_API_KEY}"}]},
        }
        agent = create_agent(
            actor=ACTOR,
            tenant=owner.tenant,
            name="traced",
            blueprint="support_agent",
            config=config,
        )
        response = owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": "u1", "message": "how do I reset my password"},
            headers={"Prefer": "wait=20", "X-Correlation-ID": "trace-me-1"},
        )
    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    finished = spans.get_finished_spans()

    http = next(s for s in finished if s.kind == trace.SpanKind.SERVER)
    run = _by_name(finished, "agentflow.run")
    # The LLM intent classifier's call and the answer's: each a span under the run.
    chats = [s for s in finished if s.name == "chat gpt-4o-mini"]
    assert len(chats) == 2
    task = next(s for s in finished if s.name == "run/agentflow.runs.execute")
    # One trace: the API's request span is the root, the task's context came in its message.
    assert {s.context.trace_id for s in (http, task, run, *chats)} == {http.context.trace_id}
    for chat in chats:
        # Each call inside the plan step that made it (classify, then generate_response).
        assert _ancestors(chat, finished)[:3] == ["agentflow.plan_step", "agentflow.run", task.name]
        assert http.name in _ancestors(chat, finished)
    steps = [s for s in finished if s.name == "agentflow.plan_step"]
    path = [step["node"] for step in owner.get(f"/api/v1/runs/{run_id}/steps").json()["steps"]]
    assert [(s.attributes or {})["agentflow.plan.node"] for s in steps] == path
    assert all((s.attributes or {})["agentflow.plan.outcome"] == "success" for s in steps)
    assert {_ancestors(s, finished)[0] for s in steps} == {"agentflow.run"}

    assert http.attributes is not None
    assert http.attributes["agentflow.correlation_id"] == "trace-me-1"
    assert task.attributes is not None
    assert task.attributes["agentflow.correlation_id"] == "trace-me-1"
    assert task.attributes["agentflow.tenant_id"] == str(owner.tenant.pk)
    assert run.attributes is not None
    assert run.attributes["agentflow.run_id"] == run_id
    assert run.attributes["agentflow.agent_id"] == str(agent.pk)
    assert run.attributes["agentflow.tenant_id"] == str(owner.tenant.pk)
    assert run.attributes["agentflow.intent"] == "PASSWORD_RESET"
    # The classifier asks for JSON and gets this server's prose: an error span, and the
    # run goes on with the offline classifier; the answer's call has the usage.
    failed, answered = sorted(chats, key=lambda s: s.status.is_ok)
    assert failed.status.status_code == StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    for chat in chats:
        assert chat.kind == trace.SpanKind.CLIENT
        assert chat.attributes is not None
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert answered.attributes is not None
    assert answered.attributes["gen_ai.system"] == "openai"
    assert answered.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert answered.attributes["gen_ai.usage.input_tokens"] == 42  # what the server reported
    assert answered.attributes["gen_ai.usage.output_tokens"] == 7


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: decodes each protobuf export request it is sent."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_spans_are_exported_over_otlp_http_when_the_endpoint_is_set(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "agentflow-test")
    monkeypatch.setattr(kernel_tracing, "tracer", trace.get_tracer("agentflow"))
    try:
        assert telemetry.configure_tracing("web") is not None
        agent = await AgentFrameworkBuilder().build()
        reply = await agent.process_message(
            user_id="u1", message="where is my parcel", context={"run_id": "r9"}
        )
        await agent.aclose()
        telemetry.shutdown_tracing()  # flushes the batch
    finally:
        telemetry.shutdown_tracing()
        _reset_global_provider()

    assert reply.content
    exported = [
        (resource_spans.resource, span)
        for request in _Receiver.received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    names = {span.name for _, span in exported}
    assert "agentflow.run" in names
    assert "chat offline-extractive" in names  # the offline provider's model
    resource = {a.key: a.value.string_value for a in exported[0][0].attributes}
    assert resource["service.name"] == "agentflow-test"
    assert resource["agentflow.component"] == "web"
    run = next(span for _, span in exported if span.name == "agentflow.run")
    assert {a.key: a.value.string_value for a in run.attributes}["agentflow.run_id"] == "r9"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_web_server_exports_its_request_spans(receiver: str, tmp_path: Path) -> None:
    """The deployment's own wiring: uvicorn on agentflow.server.asgi with the endpoint set
    exports a SERVER span per request, in the batch processor's next export (the standard
    OTEL_BSP_SCHEDULE_DELAY, shortened here)."""
    port = _free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "PYTHONWARNINGS": "ignore"}
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # milliseconds
    log = (tmp_path / "web.log").open("w", encoding="utf-8")
    command = [sys.executable, "-m", "uvicorn", "agentflow.server.asgi:application"]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--lifespan", "off", "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            assert server.poll() is None, (tmp_path / "web.log").read_text()
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)
        assert answer.status_code == 200
        deadline = time.monotonic() + 15
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(30)
        log.close()

    spans = [
        (span, resource_spans.resource)
        for request in _Receiver.received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    server_spans = [span for span, _ in spans if span.kind == span.SPAN_KIND_SERVER]
    assert [span.name for span in server_spans] == ["GET healthz"]
    attributes = {a.key: a.value.string_value for a in server_spans[0].attributes}
    assert attributes["agentflow.correlation_id"] == answer.headers["X-Correlation-ID"]
    resource = {a.key: a.value.string_value for a in spans[0][1].attributes}
    assert resource["agentflow.component"] == "web"
