"""A typed Python client for AgentFlow's REST API (docs/api.md), sync and async, on httpx.

    from agentflow.client import AgentFlowClient

    with AgentFlowClient("http://127.0.0.1:8000", api_key) as af:
        agent = af.create_agent("support", "support_agent")
        run = af.send_message(agent["id"], "customer-1", "How do I reset my password?")

A pure client: it imports neither Django nor the platform (an import-linter contract in
pyproject.toml), so it installs and runs wherever httpx does.
"""

from __future__ import annotations

from agentflow.client._async import AsyncAgentFlowClient
from agentflow.client._protocol import RetryPolicy
from agentflow.client._sync import AgentFlowClient
from agentflow.client.errors import (
    AgentFlowError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    RunTimeoutError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
)

__all__ = [
    "APIError",
    "AgentFlowClient",
    "AgentFlowError",
    "AsyncAgentFlowClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GoneError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "RetryPolicy",
    "RunTimeoutError",
    "ServerError",
    "ServiceUnavailableError",
    "TransportError",
    "ValidationError",
]
