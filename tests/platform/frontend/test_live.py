"""Live pages over the real socket: applying the pushed events equals a fresh load.

Each list page holds its rows as JSON (the fragment's, ``?fragment=rows``) and applies
``run.updated`` / ``hitl.*`` events with the rules of frontend/static/frontend/pages.js,
mirrored below in Python. After real work (a Celery worker running runs, reviewers
deciding) the state built from the first fragment plus the events must equal a fresh
fragment, exactly. Also: a socket only ever gets its own tenant's events, only of agents
its user may see, and an anonymous socket is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from agentflow import orchestration
from agentflow import services as run_services
from agentflow.models import Agent
from agentflow.server.asgi import application
from frontend.consumers import CLOSE_UNAUTHENTICATED
from governance import services as governance
from governance.audit import Actor
from hitl import services as hitl_services
from tenants import services as tenant_services
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, make_user, member, signed_in
from tests.platform.hitl.conftest import (
    ALWAYS_REVIEW,
    LOW_CONFIDENCE,
    escalated_run,
    review_of,
    run_in_own_thread,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://testserver")
Row = dict[str, Any]


# --- the rules of pages.js, in Python ---

RUN_RANK = {
    "pending": 0,
    "processing": 1,
    "awaiting_review": 2,
    "completed": 3,
    "failed": 3,
    "cancelled": 3,
}
OPEN_REQUEST = ("pending", "assigned", "escalated")
PRIORITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}


def _time(value: str | None) -> datetime:
    return datetime.fromisoformat((value or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


def apply_run(state: list[Row], run: Row, filters: dict[str, str], limit: int) -> list[Row]:
    """pages.js runAccepts + liveTable.apply + compareRuns."""
    rows = {row["id"]: row for row in state}
    current = rows.get(run["id"])
    if current and RUN_RANK[run["status"]] < RUN_RANK[current["status"]]:
        return state  # a late event about an earlier state changes nothing
    keep = (
        (not filters.get("status") or run["status"] == filters["status"])
        and (not filters.get("agent") or run["agent_id"] == filters["agent"])
        and (not filters.get("since") or _time(run["created_at"]) >= _time(filters["since"]))
    )
    if keep:
        rows[run["id"]] = {**(current or {}), **run}  # pages.js merge: a row keeps its glance
    else:
        rows.pop(run["id"], None)
    ordered = sorted(rows.values(), key=lambda r: (_time(r["created_at"]), r["id"]), reverse=True)
    return ordered[:limit]


GLANCE = {"excerpt", "intent", "confidence", "offline"}  # the runs list's own, not the API's


def api_fields(row: Row) -> Row:
    return {key: value for key, value in row.items() if key not in GLANCE}


def apply_request(state: list[Row], request: Row) -> list[Row]:
    """pages.js queueList accept + liveTable.apply + compareRequests."""
    rows = {row["id"]: row for row in state}
    if request["status"] in OPEN_REQUEST:
        rows[request["id"]] = request
    else:
        rows.pop(request["id"], None)
    return sorted(
        rows.values(),
        key=lambda r: (
            -PRIORITY_RANK[r["priority"]],
            _time(r["sla_deadline"]),
            _time(r["created_at"]),
            r["id"],
        ),
    )[:200]


# --- helpers --------------------------------------------------------------------------------------


def session_cookie(user: User_) -> bytes:
    return f"sessionid={user.client.cookies['sessionid'].value}".encode()


async def connect(user: User_, query: str = "") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/live/{query}", headers=[ORIGIN, (b"cookie", session_cookie(user))]
    )
    connected, _ = await communicator.connect(timeout=10)  # a loaded CI machine is slow
    assert connected
    hello = await communicator.receive_json_from(timeout=5)
    assert hello["type"] == "hello"
    return communicator


async def collect(
    communicator: WebsocketCommunicator,
    done: Callable[[list[Row]], bool],
    timeout: float = 30.0,
) -> list[Row]:
    """Events until ``done(events)``, then whatever still arrives within half a second."""
    events: list[Row] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(events):
        remaining = deadline - loop.time()
        assert remaining > 0, f"timed out; got {[e['type'] for e in events]}"
        events.append(await communicator.receive_json_from(timeout=remaining))
    while not await communicator.receive_nothing(timeout=0.5):
        events.append(await communicator.receive_json_from(timeout=1))
    return events


async def fragment(user: User_, path: str) -> Any:
    response = await sync_to_async(user.client.get)(path)
    assert response.status_code == 200, response.content[:500]
    return response.json()


def settled(run_ids: list[str], events: list[Row]) -> bool:
    final = {"awaiting_review", "completed", "failed", "cancelled"}
    seen = {
        e["run"]["id"] for e in events if e["type"] == "run.updated" and e["run"]["status"] in final
    }
    return set(run_ids) <= seen


# --- (a) applying events equals a fresh load ---


async def test_runs_list_state_from_events_equals_a_fresh_load(
    celery_worker_app: object, acme: Persona, agent: Agent
) -> None:
    owner = await sync_to_async(member)(acme.tenant, "olivia", "owner")
    waiting = await run_in_own_thread(escalated_run)(agent)  # decided below, while we watch
    pages = {
        "/runs/?fragment=rows": {},
        "/runs/?fragment=rows&status=awaiting_review": {"status": "awaiting_review"},
        f"/runs/?fragment=rows&agent={agent.pk}&status=completed": {
            "agent": str(agent.pk),
            "status": "completed",
        },
    }
    states = {path: (await fragment(owner, path))["rows"] for path in pages}
    assert [row["id"] for row in states["/runs/?fragment=rows"]] == [str(waiting.pk)]
    socket = await connect(owner, f"?tenant={acme.tenant.pk}")

    def start(message: str) -> str:
        request = run_services.RunRequest(user_id="customer-9", message=message)
        return str(run_services.start_run(actor=ACTOR, agent=agent, request=request).pk)

    started = [
        await sync_to_async(start)(message)
        for message in ("How do I reset my password?", LOW_CONFIDENCE, ALWAYS_REVIEW)
    ]
    item = await sync_to_async(review_of)(waiting)
    reviewer = hitl_services.Reviewer(
        actor=Actor("user", str(owner.user.pk)), user_id=owner.user.pk, role="owner"
    )
    await sync_to_async(orchestration.decide_review)(
        reviewer=reviewer, request=item, decision="approve"
    )

    events = await collect(socket, lambda got: settled([*started, str(waiting.pk)], got))
    runs = [e["run"] for e in events if e["type"] == "run.updated"]
    statuses = {run_id: [r["status"] for r in runs if r["id"] == run_id] for run_id in started}
    for run_id in started:
        # Created, picked up, settled: every transition was announced, in order.
        assert statuses[run_id][:2] == ["pending", "processing"], statuses[run_id]
    assert {r["status"] for r in runs if r["id"] == str(waiting.pk)} == {"completed"}

    for path, filters in pages.items():
        state = states[path]
        for run in runs:
            state = apply_run(state, run, filters, limit=50)
        fresh = (await fragment(owner, path))["rows"]
        assert [api_fields(row) for row in state] == [api_fields(row) for row in fresh], path
        # What events do not carry (the list's glance) the page refetches when a row lacks
        # it (pages.js runsList): here, every row that arrived by event.
        missing = {row["id"] for row in state if "excerpt" not in row}
        assert missing == {row["id"] for row in fresh} - {row["id"] for row in states[path]}
        assert missing, path
        assert all(row["excerpt"] and "intent" in row for row in fresh), path
    assert len((await fragment(owner, "/runs/?fragment=rows"))["rows"]) == 4
    await socket.disconnect()


async def test_queue_state_from_events_equals_a_fresh_load(acme: Persona, agent: Agent) -> None:
    owner = await sync_to_async(member)(acme.tenant, "olivia", "owner")
    rita = await sync_to_async(member)(acme.tenant, "rita", "reviewer")
    before = await run_in_own_thread(escalated_run)(agent, priority="low")
    state = (await fragment(owner, "/hitl/?fragment=rows"))["rows"]
    assert len(state) == 1
    socket = await connect(owner, f"?tenant={acme.tenant.pk}")

    urgent = await run_in_own_thread(escalated_run)(
        agent, message=ALWAYS_REVIEW, priority="critical"
    )
    medium = await run_in_own_thread(escalated_run)(agent)
    # Through the pages, as people do it: rita claims the urgent one, olivia approves the
    # one from before, rita claims and gives back the medium one.
    for user, request_run, data in (
        (rita, urgent, {"action": "claim"}),
        (owner, before, {"action": "approve"}),
        (rita, medium, {"action": "claim"}),
        (rita, medium, {"action": "unclaim", "reason": "lunch"}),
    ):
        request_id = (await sync_to_async(review_of)(request_run)).pk
        response = await sync_to_async(user.client.post)(f"/hitl/{request_id}/", data)
        assert response.status_code == 302, response.content[:500]

    def done(events: list[Row]) -> bool:
        actions = [e["type"] for e in events if e["type"].startswith("hitl.")]
        return (
            actions.count("hitl.queued") >= 2
            and "hitl.decided" in actions
            and (actions.count("hitl.assigned") >= 2 and "hitl.unclaimed" in actions)
        )

    events = await collect(socket, done)
    for event in events:
        if event["type"].startswith("hitl."):
            state = apply_request(state, event["request"])
    fresh = (await fragment(owner, "/hitl/?fragment=rows"))["rows"]
    assert state == fresh
    assert [row["run_id"] for row in fresh] == [str(urgent.pk), str(medium.pk)]
    assert fresh[0]["assignee"]["username"] == "rita"
    assert fresh[1]["status"] == "pending"
    await socket.disconnect()


# --- (b) isolation ---


async def test_a_tenant_never_receives_another_tenants_events(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent
) -> None:
    owner = await sync_to_async(member)(acme.tenant, "olivia", "owner")
    socket = await connect(owner)  # no ?tenant: every tenant of olivia's, i.e. Acme
    peeking = await connect(owner, f"?tenant={globex.tenant.pk}")  # not hers: joins nothing
    globex_owner = await sync_to_async(member)(globex.tenant, "gus", "owner")
    watcher = await connect(globex_owner, f"?tenant={globex.tenant.pk}")

    run = await run_in_own_thread(escalated_run)(foreign_agent)
    item = await sync_to_async(review_of)(run)
    response = await sync_to_async(globex_owner.client.post)(
        f"/hitl/{item.pk}/", {"action": "approve"}
    )
    assert response.status_code == 302
    # Globex's own socket sees all of it, so the events were sent ...
    seen = await collect(watcher, lambda got: any(e["type"] == "hitl.decided" for e in got))
    assert {e["type"] for e in seen} >= {"run.updated", "hitl.queued", "hitl.decided"}
    # ... and Acme's sockets, whatever they asked for, got none of it.
    assert await socket.receive_nothing(timeout=0.5)
    assert await peeking.receive_nothing(timeout=0.1)
    for communicator in (socket, peeking, watcher):
        await communicator.disconnect()


async def test_a_restricted_member_only_gets_events_of_agents_it_may_see(
    acme: Persona, agent: Agent
) -> None:
    other = await sync_to_async(make_agent)(acme, "billing")
    viewer = await sync_to_async(member)(acme.tenant, "vic", "viewer")
    user = await sync_to_async(User.objects.get)(pk=viewer.user.pk)
    await sync_to_async(governance.assign_role)(
        actor=ACTOR, tenant=acme.tenant, user=user, role="viewer", agents=[str(agent.pk)]
    )
    socket = await connect(viewer, f"?tenant={acme.tenant.pk}")
    hidden = await run_in_own_thread(escalated_run)(other)
    visible = await run_in_own_thread(escalated_run)(agent)
    events = await collect(socket, lambda got: any(e["type"] == "hitl.queued" for e in got))
    assert events
    for event in events:
        body = event.get("run") or event.get("request") or {}
        assert body["agent_id"] == str(agent.pk), event
    assert {e["run"]["id"] for e in events if e["type"] == "run.updated"} == {str(visible.pk)}
    assert str(hidden.pk) not in str(events)
    # The pages agree: the hidden agent's run and review are not listed, and are 404.
    rows = (await fragment(viewer, "/runs/?fragment=rows"))["rows"]
    assert [row["id"] for row in rows] == [str(visible.pk)]
    hidden_request = await sync_to_async(review_of)(hidden)
    assert (await sync_to_async(viewer.client.get)(f"/runs/{hidden.pk}/")).status_code == 404
    page = await sync_to_async(viewer.client.get)(f"/hitl/{hidden_request.pk}/")
    assert page.status_code == 404
    await socket.disconnect()


async def test_a_suspended_tenants_members_get_no_events(acme: Persona, agent: Agent) -> None:
    owner = await sync_to_async(member)(acme.tenant, "olivia", "owner")
    await sync_to_async(tenant_services.set_status)(
        actor=ACTOR, tenant=acme.tenant, status="suspended"
    )
    socket = await connect(owner, f"?tenant={acme.tenant.pk}")
    await run_in_own_thread(escalated_run)(agent)
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_platform_admins_watch_one_tenant_or_all(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent
) -> None:
    root = await sync_to_async(make_user)("root", superuser=True)
    admin = await sync_to_async(signed_in)(root)
    everything = await connect(admin, "?tenant=all")  # the overview of every tenant
    only_globex = await connect(admin, f"?tenant={globex.tenant.pk}")
    ours = await run_in_own_thread(escalated_run)(agent)
    theirs = await run_in_own_thread(escalated_run)(foreign_agent)

    def queued(*runs: Any) -> Callable[[list[Row]], bool]:
        wanted = {str(run.pk) for run in runs}
        return lambda got: (
            wanted <= {e["request"]["run_id"] for e in got if e["type"] == "hitl.queued"}
        )

    seen = await collect(everything, queued(ours, theirs))
    assert {e["run"]["id"] for e in seen if e["type"] == "run.updated"} == {
        str(ours.pk),
        str(theirs.pk),
    }
    watched = await collect(only_globex, queued(theirs))
    assert str(ours.pk) not in str(watched)
    for communicator in (everything, only_globex):
        await communicator.disconnect()


# --- (c) anonymous ---


async def test_an_anonymous_socket_is_refused(db: None) -> None:
    for query in ("", "?tenant=1", "?tenant=all"):
        communicator = WebsocketCommunicator(application, f"/ws/live/{query}", headers=[ORIGIN])
        connected, code = await communicator.connect()
        assert not connected
        assert code == CLOSE_UNAUTHENTICATED
        # As the server does after a close; left to __del__, the consumer's cancellation
        # can be swallowed inside channels_redis and hang the loop's shutdown.
        await communicator.disconnect()
    # A stale or forged session cookie is anonymous too.
    forged = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", b"sessionid=forged")]
    )
    connected, code = await forged.connect()
    assert not connected
    await forged.disconnect()
    anonymous = await sync_to_async(Client().get)("/runs/?fragment=rows")
    assert anonymous.status_code == 302
