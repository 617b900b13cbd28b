"""The asynchronous client: the same calls as :class:`AgentFlowClient`, awaited."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Self, cast

import httpx

from agentflow.client import _calls as calls
from agentflow.client._protocol import (
    SETTLING,
    Call,
    RetryPolicy,
    base_url,
    client_headers,
    location,
    poll_delay,
    result,
    retry_delay,
)
from agentflow.client.errors import RunTimeoutError, TransportError
from agentflow.client.types import (
    Agent,
    AgentUsage,
    Decision,
    Feedback,
    KnowledgeDocument,
    Message,
    Page,
    Priority,
    Provider,
    ReviewRequest,
    Run,
    WebhookEndpoint,
)


class AsyncAgentFlowClient:
    """``AsyncAgentFlowClient("http://127.0.0.1:8000", api_key)``; use it as an async context
    manager (or await ``aclose``). Creating calls carry an ``Idempotency-Key`` kept across retries;
    errors are :mod:`agentflow.client.errors` exceptions."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll_interval: float = 1.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._http.base_url = httpx.URL(base_url(url))
        self._http.headers.update(client_headers(api_key))
        self._http.follow_redirects = True  # a settled run's 303 leads to its result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- transport ---------------------------------------------------------------------
    async def _send(self, call: Call) -> httpx.Response:
        call = call.prepared()
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as exc:
                delay = retry_delay(self.retry, call, attempt, None)
                if delay is None:
                    message = f"{call.method} {call.path}: {exc!r}"
                    raise TransportError(message, correlation_id=call.correlation_id) from exc
            else:
                delay = retry_delay(self.retry, call, attempt, response)
                if delay is None:
                    return response
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call) -> Any:
        return result(await self._send(call))

    # -- agents ------------------------------------------------------------------------
    async def create_agent(
        self, name: str, blueprint: str = "support_agent", config: dict[str, Any] | None = None
    ) -> Agent:
        return cast(Agent, await self._json(calls.create_agent(name, blueprint, config)))

    async def list_agents(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> Page[Agent]:
        return cast(Page[Agent], await self._json(calls.list_agents(limit, offset)))

    async def get_agent(self, agent_id: str) -> Agent:
        return cast(Agent, await self._json(calls.get_agent(agent_id)))

    async def add_knowledge(
        self, agent_id: str, title: str, content: str, content_type: str = "text/markdown"
    ) -> KnowledgeDocument:
        call = calls.add_knowledge(agent_id, title, content, content_type)
        return cast(KnowledgeDocument, await self._json(call))

    async def agent_usage(
        self, *, days: int | None = None, agent_id: str | None = None
    ) -> AgentUsage:
        """Tokens and dollars per agent and UTC day over the last ``days`` days (the
        server's default: 7); one agent's with ``agent_id``."""
        return cast(AgentUsage, await self._json(calls.agent_usage(days, agent_id)))

    # -- runs --------------------------------------------------------------------------
    async def send_message(
        self,
        agent_id: str,
        user_id: str,
        message: str,
        *,
        priority: Priority | None = None,
        metadata: dict[str, Any] | None = None,
        wait: float | None = None,
        respond_async: bool = False,
        poll_timeout: float = 60.0,
    ) -> Run:
        """The settled run: a ``201`` as it is, a ``202`` polled (``Retry-After`` honoured)
        until it leaves pending/processing, for at most ``poll_timeout`` seconds."""
        call = calls.send_message(
            agent_id,
            user_id,
            message,
            priority=priority,
            metadata=metadata,
            wait=wait,
            respond_async=respond_async,
        )
        response = await self._send(call)
        run = cast(Run, result(response))
        if response.status_code != 202:
            return run
        return await self._settle(
            location(response), run, response, time.monotonic() + poll_timeout
        )

    async def get_run(self, run_id: str) -> Run:
        return cast(Run, await self._json(calls.get_run(run_id)))

    async def wait_for_run(self, run_id: str, *, poll_timeout: float = 60.0) -> Run:
        response = await self._send(calls.get_run(run_id))
        run = cast(Run, result(response))
        return await self._settle(str(response.url), run, response, time.monotonic() + poll_timeout)

    async def _settle(self, url: str, run: Run, response: httpx.Response, deadline: float) -> Run:
        while run["status"] in SETTLING:
            delay = poll_delay(response, self.poll_interval)
            if time.monotonic() + delay > deadline:
                message = f"run {run['id']} is still {run['status']}"
                raise RunTimeoutError(message, run=dict(run), correlation_id=None)
            await asyncio.sleep(delay)
            response = await self._send(calls.poll(url))
            run = cast(Run, result(response))
        return run

    async def get_conversation(
        self, session_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> Page[Message]:
        return cast(Page[Message], await self._json(calls.conversation(session_id, limit, offset)))

    # -- feedback ----------------------------------------------------------------------
    async def send_feedback(
        self,
        run_id: str,
        *,
        rating: int | None = None,
        thumbs: str | None = None,
        comment: str | None = None,
        message_id: str | None = None,
    ) -> Feedback:
        call = calls.send_feedback(
            run_id, rating=rating, thumbs=thumbs, comment=comment, message_id=message_id
        )
        return cast(Feedback, await self._json(call))

    async def list_feedback(
        self, *, run_id: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page[Feedback]:
        return cast(Page[Feedback], await self._json(calls.list_feedback(run_id, limit, offset)))

    # -- human in the loop -------------------------------------------------------------
    async def review_queue(
        self,
        *,
        status: str | None = None,
        priority: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[ReviewRequest]:
        call = calls.review_queue(status, priority, limit, offset)
        return cast(Page[ReviewRequest], await self._json(call))

    async def get_review(self, request_id: str) -> ReviewRequest:
        return cast(ReviewRequest, await self._json(calls.get_review(request_id)))

    async def decide_review(
        self,
        request_id: str,
        decision: Decision,
        *,
        response: str | None = None,
        reason: str | None = None,
    ) -> ReviewRequest:
        call = calls.decide_review(request_id, decision, response, reason)
        return cast(ReviewRequest, await self._json(call))

    # -- webhook endpoints -------------------------------------------------------------
    async def create_webhook_endpoint(
        self, provider: Provider, *, name: str | None = None, secret: str | None = None
    ) -> WebhookEndpoint:
        call = calls.create_webhook_endpoint(provider, name, secret)
        return cast(WebhookEndpoint, await self._json(call))

    async def list_webhook_endpoints(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> Page[WebhookEndpoint]:
        call = calls.list_webhook_endpoints(limit, offset)
        return cast(Page[WebhookEndpoint], await self._json(call))

    async def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return cast(WebhookEndpoint, await self._json(calls.get_webhook_endpoint(endpoint_id)))

    async def rotate_webhook_secret(
        self, endpoint_id: str, *, secret: str | None = None, overlap_seconds: int | None = None
    ) -> WebhookEndpoint:
        call = calls.rotate_webhook_secret(endpoint_id, secret, overlap_seconds)
        return cast(WebhookEndpoint, await self._json(call))

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        await self._json(calls.delete_webhook_endpoint(endpoint_id))
