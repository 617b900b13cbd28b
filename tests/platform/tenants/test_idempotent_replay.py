"""Idempotent replays are the first response byte for byte, headers included (issue 13.10).

PostgreSQL's JSONB reorders object keys (shorter keys first), so a replay re-rendered from
a JSONB copy of the body is equal as JSON but not the same bytes: a client comparing or
signing responses, or caching them by digest, sees two different answers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import conflict
from agentflow.models import Agent, Run
from tenants.idempotency import idempotent
from tenants.models import IdempotencyRecord
from tenants.views_base import TenantScopedAPIView

# The API personas and agent of the API test suite.
from tests.platform.api.conftest import Persona, agent, owner  # noqa: F401

RUNS = "/api/v1/agents/{agent}/runs"
KEPT = ("Content-Type", "Location", "Retry-After")
REFUSALS = "/test-idempotency/refusals"


def _jsonb_order(body: bytes) -> bytes:
    """What the old replay sent: the body through a JSONB column, rendered again."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [body.decode()])
        text = cursor.fetchone()[0]
    return json.dumps(json.loads(text), separators=(",", ":")).encode()


def _assert_replayed(first: Any, replay: Any) -> None:
    assert replay.status_code == first.status_code
    assert replay.content == first.content, (first.content[:200], replay.content[:200])
    for name in KEPT:
        assert replay.get(name) == first.get(name), name
    assert replay["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")


def test_a_replayed_run_creation_is_the_first_responses_bytes(
    owner: Persona,  # noqa: F811
    agent: Agent,  # noqa: F811
) -> None:
    """A run POST whose answer JSONB would reorder (``id`` before ``agent_id``...) and whose
    body keys are not sorted either: two replays carry the first bytes and headers."""
    path = RUNS.format(agent=agent.pk)
    body = {"user_id": "u", "message": "hi", "metadata": {"zeta": 1, "alpha": {"yy": 2, "b": 3}}}
    headers = {"Idempotency-Key": "exact-1", "Prefer": "respond-async"}
    first = owner.post(path, body, headers=headers)
    assert first.status_code == 202, first.content
    # Not vacuous: this body is one that a JSONB round trip changes.
    assert _jsonb_order(first.content) != first.content
    for _ in range(2):
        _assert_replayed(first, owner.post(path, body, headers=headers))
    assert Run.unscoped.filter(tenant=owner.tenant).count() == 1


def test_a_replay_ignores_the_accept_header_of_the_retry(
    owner: Persona,  # noqa: F811
    agent: Agent,  # noqa: F811
) -> None:
    """The stored bytes are what goes out: a retry asking for indented JSON still gets the
    first response exactly (a replay never renders again)."""
    path = RUNS.format(agent=agent.pk)
    body = {"user_id": "u", "message": "hi"}
    headers = {"Idempotency-Key": "exact-2", "Prefer": "respond-async"}
    first = owner.post(path, body, headers=headers)
    replay = owner.post(path, body, headers={**headers, "Accept": "application/json; indent=4"})
    _assert_replayed(first, replay)


class _RefusingView(TenantScopedAPIView):
    """An idempotent POST whose answer is an error in the API's shape (409), returned
    rather than raised, so it is stored like any other first answer."""

    @idempotent
    def post(self, request: Request) -> Response:
        response = self.handle_exception(conflict("The order was already shipped.", "shipped"))
        assert isinstance(response, Response)
        return response


urlpatterns = [
    path("test-idempotency/refusals", _RefusingView.as_view()),
    path("", include("agentflow.server.urls")),
]


@pytest.mark.urls(__name__)
def test_a_replayed_error_response_is_the_first_errors_bytes(
    owner: Persona,  # noqa: F811
) -> None:
    """The error body (detail, error_type, correlation_id, timestamp: an order JSONB
    changes) comes back as first sent: the first correlation id and timestamp, same bytes,
    same Content-Type."""
    first = owner.post(REFUSALS, {"order": 7}, headers={"Idempotency-Key": "refused-1"})
    assert first.status_code == 409
    assert first.json()["error_type"] == "shipped"
    assert _jsonb_order(first.content) != first.content
    replay = owner.post(REFUSALS, {"order": 7}, headers={"Idempotency-Key": "refused-1"})
    _assert_replayed(first, replay)
    assert replay.json()["correlation_id"] == first.json()["correlation_id"]


def test_a_record_stored_before_exact_bytes_still_replays(
    owner: Persona,  # noqa: F811
    agent: Agent,  # noqa: F811
) -> None:
    """Rows written before migration 0003 have no bytes: they replay their JSON (equal as
    JSON, with the kept headers), as they always did."""
    path = RUNS.format(agent=agent.pk)
    body = {"user_id": "u", "message": "hi"}
    headers = {"Idempotency-Key": "old-row", "Prefer": "respond-async"}
    first = owner.post(path, body, headers=headers)
    IdempotencyRecord.objects.filter(key="old-row").update(response_content=None)
    replay = owner.post(path, body, headers=headers)
    assert (replay.status_code, replay.json()) == (first.status_code, first.json())
    assert replay["Location"] == first["Location"]
    assert replay["Idempotent-Replayed"] == "true"
