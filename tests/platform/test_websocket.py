"""The dashboard WebSocket over the real Redis channel layer, through the full ASGI stack."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from agentflow.core import worker_loop
from agentflow.core.realtime import (
    BATCH_HANDLER,
    BATCH_LIMIT,
    EVENT_HANDLER,
    consecutive_by_group,
    send_now,
    send_to_group,
    user_group,
)
from agentflow.server.asgi import application
from frontend.consumers import CLOSE_UNAUTHENTICATED

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://testserver")
# A refused socket's consumer still waits on the channel layer until the server tells it
# the socket is gone (websocket.disconnect). Tests must say so too: left to the
# communicator's __del__, the consumer is cancelled inside channels_redis's receive, which
# can swallow the cancellation and keep the loop's shutdown waiting forever (seen in CI).


def _login_cookie(username: str) -> tuple[int, bytes]:
    user = get_user_model().objects.create_user(username=username, password="s3cret-pass!")
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"]
    return user.pk, f"sessionid={cookie.value}".encode()


async def test_authenticated_socket_receives_its_group_events() -> None:
    user_id, cookie = await sync_to_async(_login_cookie)("reviewer1")
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from(timeout=5) == {"type": "hello", "user": "reviewer1"}

    await send_to_group(user_group(user_id), {"type": "run.updated", "run_id": "r1"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "run.updated",
        "run_id": "r1",
    }

    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()


async def test_events_of_another_user_never_arrive() -> None:
    _, cookie = await sync_to_async(_login_cookie)("alice")
    bob_id, _ = await sync_to_async(_login_cookie)("bob")
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_json_from(timeout=5)  # hello
    await send_to_group(user_group(bob_id), {"type": "secret"})
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_anonymous_socket_is_refused() -> None:
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, code = await communicator.connect()
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()  # as the server does after a close (see ORIGIN)


async def test_foreign_origin_is_refused() -> None:
    _, cookie = await sync_to_async(_login_cookie)("mallory")
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


@pytest.mark.slow
async def test_an_idle_socket_stays_open_for_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13: redis-py's 5 s read timeout equalled the channel layer's 5 s BRPOP, so
    every idle socket died after 5 s with a TimeoutError in the log."""
    user_id, cookie = await sync_to_async(_login_cookie)("idle-operator")
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_json_from(timeout=5)  # hello
    # Idle for over a minute: no event, no ping. The socket must neither close nor error.
    assert await communicator.receive_nothing(timeout=61, interval=1)

    await send_to_group(user_group(user_id), {"type": "run.updated", "run_id": "late"})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "run.updated",
        "run_id": "late",
    }
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await communicator.disconnect()
    assert "Timeout reading" not in caplog.text
    assert "TimeoutError" not in caplog.text


def _hold_process_loop() -> threading.Event:
    """Block the process loop's thread until the returned event is set: whatever is queued
    meanwhile waits for one drain of the outbox."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(10)

    worker_loop.loop().call_soon_threadsafe(hold)
    assert held.wait(5)
    return release


async def _socket(username: str) -> tuple[int, WebsocketCommunicator]:
    user_id, cookie = await sync_to_async(_login_cookie)(username)
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[ORIGIN, (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_json_from(timeout=5)  # hello
    return user_id, communicator


async def test_events_queued_together_arrive_as_the_same_frames_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann_id, ann = await _socket("ann")
    bob_id, bob = await _socket("bob")
    layer = get_channel_layer()
    sends: list[str] = []
    real_group_send = layer.group_send

    async def counted(group: str, message: dict[str, Any]) -> None:
        sends.append(message["type"])
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counted)
    release = _hold_process_loop()
    for n in range(5):
        send_now(user_group(ann_id), {"type": "run.updated", "n": n})
    send_now(user_group(bob_id), {"type": "run.updated", "n": "bob"})
    send_now(user_group(ann_id), {"type": "run.updated", "n": 5})
    release.set()

    assert [(await ann.receive_json_from(timeout=5))["n"] for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    assert (await bob.receive_json_from(timeout=5))["n"] == "bob"
    assert await ann.receive_nothing(timeout=0.3)
    # Consecutive events of one group went as one message; the order between groups held.
    assert sends == [BATCH_HANDLER, EVENT_HANDLER, EVENT_HANDLER]
    await ann.disconnect()
    await bob.disconnect()


async def test_a_closing_process_loop_sends_what_was_queued_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, communicator = await _socket("carol")
    layer = get_channel_layer()
    real_group_send = layer.group_send

    async def slow(group: str, message: dict[str, Any]) -> None:
        await asyncio.sleep(0.05)  # a slow Redis: the drain outlives the close's first steps
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", slow)
    release = _hold_process_loop()
    # Alternating with a group nobody listens to: one group_send each, so the drain is
    # still sending when the close cancels the loop's tasks, unless it is awaited first.
    for n in range(20):
        send_now(user_group(user_id), {"type": "run.updated", "n": n})
        send_now("nobody-listens", {"type": "run.updated", "n": n})
    closing = threading.Thread(target=worker_loop.close_all)
    closing.start()
    release.set()
    await sync_to_async(closing.join)(10)

    got = [(await communicator.receive_json_from(timeout=5))["n"] for _ in range(20)]
    assert got == list(range(20))
    await communicator.disconnect()


def test_runs_of_one_group_are_cut_at_the_batch_limit_and_keep_their_order() -> None:
    queued = [("a", {"n": n}) for n in range(BATCH_LIMIT + 1)] + [("b", {"n": -1}), ("a", {})]
    runs = consecutive_by_group(queued)
    assert [(group, len(events)) for group, events in runs] == [
        ("a", BATCH_LIMIT),
        ("a", 1),
        ("b", 1),
        ("a", 1),
    ]
    assert [event for _, events in runs for event in events] == [event for _, event in queued]
