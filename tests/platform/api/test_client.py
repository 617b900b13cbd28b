"""agentflow.client against the live server: pytest-django's ``live_server`` (a real HTTP
server on loopback) on the test database, runs executed by a real Celery worker.

The personas are tests/platform/api/conftest.py's; rows are committed (``transaction=True``)
so the server's threads and the worker see them.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.client import (
    AgentFlowClient,
    AsyncAgentFlowClient,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RetryPolicy,
    ValidationError,
)
from agentflow.models import Agent
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, KNOWLEDGE, SUPPORT_CONFIG, Persona, make_persona

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Recorder:
    """What went over the wire: each request's method, path, headers and time, and each
    answer's status and headers (httpx event hooks, on the client's own connection)."""

    requests: list[tuple[str, str, httpx.Headers, float]] = field(default_factory=list)
    responses: list[tuple[str, int, httpx.Headers]] = field(default_factory=list)

    def on_request(self, request: httpx.Request) -> None:
        entry = (request.method, request.url.path, request.headers, time.monotonic())
        self.requests.append(entry)

    def on_response(self, response: httpx.Response) -> None:
        entry = (response.request.method, response.status_code, response.headers)
        self.responses.append(entry)


@pytest.fixture
def owner(live_server: Any, celery_worker_app: object) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def af(live_server: Any, owner: Persona, recorder: Recorder) -> Iterator[AgentFlowClient]:
    hooks = {"request": [recorder.on_request], "response": [recorder.on_response]}
    http = httpx.Client(timeout=30, event_hooks=hooks)  # type: ignore[arg-type]
    with AgentFlowClient(live_server.url, owner.key, http_client=http) as client:
        yield client


def _support_agent(af: AgentFlowClient) -> str:
    agent = af.create_agent("support", "support_agent", SUPPORT_CONFIG)
    for title, text in KNOWLEDGE:
        af.add_knowledge(agent["id"], title, text)
    return agent["id"]


def test_agents_messages_and_the_conversation(af: AgentFlowClient) -> None:
    agent_id = _support_agent(af)

    assert af.get_agent(agent_id)["config"]["default_threshold"] == 0.5
    page = af.list_agents()
    assert [agent["id"] for agent in page["results"]] == [agent_id]
    assert page["total"] == 1

    run = af.send_message(agent_id, "customer-1", "How do I reset my password?", wait=20)
    assert run["status"] == "completed", run
    assert "Reset password" in run["result"]["content"]
    assert run["session_id"] is not None

    messages = af.get_conversation(run["session_id"])["results"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "How do I reset my password?"
    assert messages[1]["content"] == run["result"]["content"]


def test_a_202_is_polled_to_the_result_honouring_retry_after(
    af: AgentFlowClient, recorder: Recorder
) -> None:
    agent_id = _support_agent(af)
    recorder.requests.clear()
    recorder.responses.clear()

    run = af.send_message(agent_id, "customer-2", "I want a refund", respond_async=True)

    assert run["status"] in {"completed", "awaiting_review"}, run
    assert recorder.responses[0][1] == 202
    assert recorder.responses[0][2]["Retry-After"] == "1"
    posted_at = recorder.requests[0][3]
    polls = [at for method, path, _, at in recorder.requests if method == "GET"]
    assert polls, "the 202 was not polled"
    assert polls[0] - posted_at >= 0.95  # waited the second the server asked for
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    assert all(gap >= 0.95 for gap in gaps if gap > 0.2), gaps  # a 303's GET follows at once


def test_errors_are_typed_and_carry_error_type_and_correlation_id(
    af: AgentFlowClient, recorder: Recorder, live_server: Any, owner: Persona
) -> None:
    with pytest.raises(NotFoundError) as missing:
        af.get_agent(str(uuid.uuid4()))
    assert missing.value.status_code == 404
    assert missing.value.error_type == "not_found"
    sent = recorder.requests[-1][2]["X-Correlation-ID"]
    assert missing.value.correlation_id == sent

    with pytest.raises(ValidationError) as invalid:
        af.create_agent("", "support_agent")
    assert invalid.value.error_type == "validation_error"
    assert "name" in invalid.value.errors
    with tenant_scope(owner.tenant.pk):
        assert not Agent.objects.exists()  # refused, nothing written

    with (
        AgentFlowClient(live_server.url, "af_nope_nope") as stranger,
        pytest.raises(AuthenticationError) as refused,
    ):
        stranger.list_agents()
    assert refused.value.error_type == "authentication_failed"
    assert refused.value.correlation_id


def test_another_tenants_agent_is_not_found(af: AgentFlowClient, live_server: Any) -> None:
    agent_id = _support_agent(af)
    outsider = make_persona("Globex", tier="professional")
    with (
        AgentFlowClient(live_server.url, outsider.key) as theirs,
        pytest.raises(NotFoundError),
    ):
        theirs.get_agent(agent_id)


def test_hitl_queue_and_decisions_for_a_headless_review_tool(af: AgentFlowClient) -> None:
    agent_id = _support_agent(af)
    run = af.send_message(agent_id, "customer-3", "I want to talk to a human", wait=20)
    assert run["status"] == "awaiting_review", run

    queue = af.review_queue()["results"]
    assert [item["run_id"] for item in queue] == [run["id"]]
    request_id = queue[0]["id"]
    assert af.get_review(request_id)["question"] == "I want to talk to a human"

    decided = af.decide_review(request_id, "edit", response="Maria from support will call you.")
    assert decided["decision"] == "edit"
    settled = af.get_run(run["id"])  # 303 to the result, followed
    assert settled["status"] == "completed"
    assert settled["result"]["content"] == "Maria from support will call you."

    with pytest.raises(ConflictError) as again:
        af.decide_review(request_id, "reject", reason="changed my mind")
    assert again.value.error_type == "already_decided"


def test_feedback_on_a_completed_run(af: AgentFlowClient) -> None:
    agent_id = _support_agent(af)
    run = af.send_message(agent_id, "customer-4", "How do I reset my password?", wait=20)

    feedback = af.send_feedback(run["id"], rating=5, comment="spot on")
    assert feedback["score"] == 1.0
    assert feedback["kind"] == "rating"
    listed = af.list_feedback(run_id=run["id"])
    assert [item["id"] for item in listed["results"]] == [feedback["id"]]


def test_webhook_endpoints(af: AgentFlowClient) -> None:
    created = af.create_webhook_endpoint("generic", name="crm")
    assert created["secret"]
    assert created["url"].endswith(f"/api/v1/webhooks/generic/{created['id']}")
    assert [e["id"] for e in af.list_webhook_endpoints()["results"]] == [created["id"]]
    assert "secret" not in af.get_webhook_endpoint(created["id"])

    rotated = af.rotate_webhook_secret(created["id"], overlap_seconds=0)
    assert rotated["secret"]
    assert rotated["secret"] != created["secret"]

    af.delete_webhook_endpoint(created["id"])
    with pytest.raises(NotFoundError):
        af.get_webhook_endpoint(created["id"])


class _LosesFirstAnswer(BaseHTTPRequestHandler):
    """A loopback proxy to the live server that forwards every request, but hangs up
    instead of answering the first POST: the work is done, the client never hears of it."""

    upstream = ""
    seen: list[tuple[str, str | None, str]] = []
    lost: list[bool] = []

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
        answer = httpx.request(
            self.command, self.upstream + self.path, headers=headers, content=body, timeout=30
        )
        self.seen.append(
            (
                self.command,
                self.headers.get("Idempotency-Key"),
                answer.headers.get("Idempotent-Replayed", ""),
            )
        )
        if self.command == "POST" and not self.lost:
            self.lost.append(True)
            self.close_connection = True
            return  # no status line: the client sees the connection drop
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Location", "X-Correlation-ID", "Idempotent-Replayed"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet


def test_a_lost_answer_is_retried_with_the_same_idempotency_key(
    live_server: Any, owner: Persona
) -> None:
    _LosesFirstAnswer.upstream = live_server.url
    _LosesFirstAnswer.seen, _LosesFirstAnswer.lost = [], []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _LosesFirstAnswer)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        retry = RetryPolicy(max_retries=2, backoff_seconds=0.05)
        with AgentFlowClient(url, owner.key, retry=retry) as af:
            agent = af.create_agent("support", "support_agent", SUPPORT_CONFIG)
    finally:
        proxy.shutdown()
        proxy.server_close()

    posts = [entry for entry in _LosesFirstAnswer.seen if entry[0] == "POST"]
    assert len(posts) == 2
    assert posts[0][1]
    assert posts[0][1] == posts[1][1]
    assert posts[1][2] == "true"  # the server replayed its first answer
    with tenant_scope(owner.tenant.pk):
        assert list(Agent.objects.values_list("pk", flat=True)) == [uuid.UUID(agent["id"])]


async def _async_flow(url: str, key: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    async with AsyncAgentFlowClient(url, key) as af:
        agent = await af.create_agent("support", "support_agent", SUPPORT_CONFIG)
        for title, text in KNOWLEDGE:
            await af.add_knowledge(agent["id"], title, text)
        run = await af.send_message(
            agent["id"], "customer-5", "How do I reset my password?", respond_async=True
        )
        assert run["session_id"] is not None
        messages = (await af.get_conversation(run["session_id"]))["results"]
        try:
            await af.get_run(str(uuid.uuid4()))
        except NotFoundError as exc:
            error_type = exc.error_type
        return dict(run), [dict(m) for m in messages], error_type


def test_the_async_client_does_the_same(live_server: Any, owner: Persona) -> None:
    # Its own loop in a thread: the test thread stays sync for the ORM.
    box: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: box.update(out=asyncio.run(_async_flow(live_server.url, owner.key)))
    )
    thread.start()
    thread.join(120)
    run, messages, error_type = box["out"]
    assert run["status"] == "completed", run
    assert "Reset password" in run["result"]["content"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert error_type == "not_found"


def test_the_client_imports_no_django() -> None:
    code = (
        "import sys, agentflow.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def _python_block(path: Path, marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"{path.name}: {len(found)} python blocks with {marker!r}"
    return found[0]


def test_readme_client_quick_start_runs_against_the_server(
    live_server: Any, owner: Persona, tmp_path: Path
) -> None:
    script = tmp_path / "client_quickstart.py"
    script.write_text(_python_block(ROOT / "README.md", "AgentFlowClient(url"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KEY": owner.key}
    env["AGENTFLOW_URL"] = live_server.url
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("completed "), result.stdout
    assert "Reset password" in result.stdout


def test_api_md_client_example_runs_against_the_server(live_server: Any, owner: Persona) -> None:
    code = _python_block(ROOT / "docs" / "api.md", "AgentFlowClient(")
    code = code.replace('"http://127.0.0.1:8000"', repr(live_server.url))
    namespace: dict[str, Any] = {"api_key": owner.key}
    exec(compile(code, "docs/api.md", "exec"), namespace)

    assert namespace["run"]["status"] == "completed"
    assert [m["role"] for m in namespace["messages"]] == ["user", "assistant"]


def test_a_rate_limit_longer_than_the_policy_allows_is_raised_with_its_retry_after(
    live_server: Any, owner: Persona, recorder: Recorder
) -> None:
    tenant_services.update_quotas(
        actor=ACTOR, tenant=owner.tenant, tier=None, overrides={"requests_per_minute": 0}
    )
    hooks = {"request": [recorder.on_request], "response": [recorder.on_response]}
    http = httpx.Client(timeout=30, event_hooks=hooks)  # type: ignore[arg-type]
    retry = RetryPolicy(max_retries=3, max_delay_seconds=0.5)
    with (
        AgentFlowClient(live_server.url, owner.key, retry=retry, http_client=http) as af,
        pytest.raises(RateLimitedError) as limited,
    ):
        af.list_agents()

    assert limited.value.status_code == 429
    assert limited.value.error_type == "quota_exceeded"
    assert limited.value.retry_after is not None
    assert 1 <= limited.value.retry_after <= 60
    assert len(recorder.requests) == 1  # the wait it asked for is beyond the policy: not resent


def test_the_sync_and_async_clients_offer_the_same_calls() -> None:
    """The async client is the sync one awaited: same methods, same parameters."""

    def calls(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in {"close", "aclose"}
        }

    sync, asynchronous = calls(AgentFlowClient), calls(AsyncAgentFlowClient)
    assert sync == asynchronous
    assert len(sync) >= 17
    for name in sync:
        assert inspect.iscoroutinefunction(getattr(AsyncAgentFlowClient, name)), name
