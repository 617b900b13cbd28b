"""Pushing live events to dashboard users over the Channels layer.

Group names are namespaced so a user's socket only ever joins its own groups;
the tenant-scoped groups of the dashboard build on the same helpers.

Events of a process leave through one outbox, drained in order on the process's event loop
(:mod:`agentflow.core.worker_loop`): consecutive events to the same group go in one
``group_send`` (``live.events``, which the socket unpacks into the same frames, in order), so
a busy run worker pays one channel-layer round trip for many state changes instead of one
each, and the thread that committed them does not wait for Redis (issue 15).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any

import structlog
from channels.layers import get_channel_layer
from django.db import transaction

from agentflow.core import worker_loop

log = structlog.get_logger(__name__)

EVENT_HANDLER = "live.event"  # dispatched to LiveConsumer.live_event
BATCH_HANDLER = "live.events"  # dispatched to LiveConsumer.live_events: one group's, in order
BATCH_LIMIT = 100  # events per group_send at most (one channel-layer message)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def tenant_group(tenant_id: int) -> str:
    """Events every member of one tenant may see (the HITL queue, runs); never mixed."""
    return f"tenant.{tenant_id}"


async def send_to_group(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    # The group rides along so a socket can tell which tenant an event belongs to.
    await layer.group_send(group, {"type": EVENT_HANDLER, "event": event, "group": group})


def send_now(group: str, event: dict[str, Any]) -> None:
    """Queue ``event`` for ``group``; this process's outbox sends it, after what came before.

    Never blocks on Redis and never raises for the channel layer: a failed send is logged
    (the page catches up from its fragment when it reconnects).
    """
    _outbox().put(group, event)


def send_to_group_on_commit(group: str, event: dict[str, Any]) -> None:
    """Publish after the surrounding transaction commits: never announce a rolled-back change."""
    transaction.on_commit(lambda: send_now(group, event), robust=True)


async def flush() -> None:
    """Wait until every event queued so far has been handed to the channel layer."""
    drain = _outbox().drain
    if drain is not None and not drain.done():
        await asyncio.wait([asyncio.wrap_future(drain)])  # its own failure was logged


class _Outbox:
    """Events queued by any thread of the process, sent in order by one drain on the loop."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self.drain: concurrent.futures.Future[None] | None = None  # scheduled or running

    def put(self, group: str, event: dict[str, Any]) -> None:
        with self.lock:
            self.pending.append((group, event))
            if self.drain is None or self.drain.done():
                self.drain = worker_loop.submit(self._send_all())

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            taken, self.pending = self.pending, []
            if not taken:
                self.drain = None  # the next put schedules a new drain
            return taken

    async def _send_all(self) -> None:
        while taken := self._take():
            for group, events in consecutive_by_group(taken):
                try:
                    await send_events(group, events)
                except Exception:  # a dashboard's miss must not stop the other groups
                    log.exception("realtime.send_failed", group=group, events=len(events))


_outboxes: list[_Outbox] = []


def _outbox() -> _Outbox:
    """This process's outbox (a forked child starts its own: the parent sends its events)."""
    if not _outboxes or _outboxes[0].pid != os.getpid():
        _outboxes[:] = [_Outbox()]
    return _outboxes[0]


worker_loop.before_close(flush)  # a stopping worker sends what it queued, then closes


def consecutive_by_group(
    queued: list[tuple[str, dict[str, Any]]],
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Runs of consecutive events to one group (at most ``BATCH_LIMIT`` each), in order: a
    socket in several groups still gets every event in the order it was queued."""
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for group, event in queued:
        if runs and runs[-1][0] == group and len(runs[-1][1]) < BATCH_LIMIT:
            runs[-1][1].append(event)
        else:
            runs.append((group, [event]))
    return runs


async def send_events(group: str, events: list[dict[str, Any]]) -> None:
    """One group_send: a single event as ``live.event``, several as one ``live.events``."""
    if len(events) == 1:
        await send_to_group(group, events[0])
        return
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    await layer.group_send(group, {"type": BATCH_HANDLER, "events": events, "group": group})
