"""A reviewer of tenant A never sees tenant B's queue: over HTTP, and over the dashboard's
WebSocket, where A's socket gets A's queue events (and applying them gives the same state as
a fresh fetch) and never one of B's."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from agentflow.server.asgi import application
from tests.platform.api.conftest import Persona, make_agent
from tests.platform.hitl.conftest import (
    QUEUE,
    Member,
    escalated_run,
    make_member,
    review_of,
    run_in_own_thread,
)

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://testserver")


def test_each_tenants_reviewers_see_only_their_queue_over_http(
    owner: Persona, outsider: Persona, agent: Any
) -> None:
    ours = review_of(escalated_run(agent))
    theirs = review_of(escalated_run(make_agent(outsider, name="globex-bot")))
    alice = make_member(owner.tenant, "alice", "owner")
    bob = make_member(outsider.tenant, "bob", "owner")

    for member, mine, foreign in ((alice, ours, theirs), (bob, theirs, ours)):
        listed = member.get(QUEUE, status="all").json()
        assert [item["id"] for item in listed["results"]] == [str(mine.pk)]
        assert str(foreign.pk) not in member.get(QUEUE, status="all").content.decode()
        assert member.get(f"{QUEUE}/{foreign.pk}").status_code == 404
        stats = member.get("/api/v1/hitl/stats").json()
        assert sum(day["queued"] for day in stats["days"]) == 1
        reviewers = member.get("/api/v1/hitl/reviewers").json()["results"]
        assert [r["username"] for r in reviewers] == [member.user.username]


async def _socket(member: Member) -> WebsocketCommunicator:
    cookie = member.client.cookies["sessionid"].value
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", f"sessionid={cookie}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    return communicator


async def _next_hitl_event(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """The next queue event; the runs' own live events (run.updated) are not this test's."""
    while True:
        event = await communicator.receive_json_from(timeout=5)
        if str(event.get("type", "")).startswith("hitl."):
            return dict(event)


async def test_queue_events_reach_only_the_tenants_members_and_match_a_fetch(
    owner: Persona, outsider: Persona
) -> None:
    agent = await sync_to_async(make_agent)(owner)
    their_agent = await sync_to_async(make_agent)(outsider, "globex-bot")
    alice = await sync_to_async(make_member)(owner.tenant, "alice", "reviewer")
    bob = await sync_to_async(make_member)(outsider.tenant, "bob", "reviewer")
    alice_socket, bob_socket = await _socket(alice), await _socket(bob)

    run = await run_in_own_thread(escalated_run)(agent)
    queued = await _next_hitl_event(alice_socket)
    assert queued["type"] == "hitl.queued"
    request_id = queued["request"]["id"]
    assert queued["request"]["run_id"] == str(run.pk)
    assert await bob_socket.receive_nothing(timeout=0.5)

    await sync_to_async(alice.claim)(request_id)
    assigned = await _next_hitl_event(alice_socket)
    assert assigned["type"] == "hitl.assigned"
    await sync_to_async(alice.respond)(request_id, decision="approve")
    decided = await _next_hitl_event(alice_socket)
    assert decided["type"] == "hitl.decided"
    fetched = await sync_to_async(alice.get)(f"{QUEUE}/{request_id}")
    assert decided["request"] == fetched.json()  # applying the events equals a fresh fetch
    assert await bob_socket.receive_nothing(timeout=0.5)

    # And the other way round: bob's tenant's events never reach alice (once her own run's
    # remaining live events have arrived).
    while not await alice_socket.receive_nothing(timeout=0.5):
        own = await alice_socket.receive_json_from(timeout=5)
        about = own.get("run", {}).get("id") or own.get("golden_path", {}).get("source_run_id")
        assert about == str(run.pk), own  # her run's state, or the golden path it taught
    await run_in_own_thread(escalated_run)(their_agent)
    theirs = await _next_hitl_event(bob_socket)
    assert theirs["type"] == "hitl.queued"
    assert await alice_socket.receive_nothing(timeout=0.5)

    await alice_socket.disconnect()
    await bob_socket.disconnect()


async def test_a_suspended_tenants_members_get_no_tenant_events(owner: Persona) -> None:
    from tenants.services import set_status
    from tests.platform.api.conftest import ACTOR

    agent = await sync_to_async(make_agent)(owner)
    alice = await sync_to_async(make_member)(owner.tenant, "alice", "reviewer")
    await sync_to_async(set_status)(actor=ACTOR, tenant=owner.tenant, status="suspended")
    socket = await _socket(alice)
    await run_in_own_thread(escalated_run)(agent)
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()
