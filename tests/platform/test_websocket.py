"""The dashboard WebSocket over the real Redis channel layer, through the full ASGI stack."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from agentflow.core.realtime import send_to_group, user_group
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
