"""Pushing live events to dashboard users over the Channels layer.

Group names are namespaced so a user's socket only ever joins its own groups;
the tenant-scoped groups of the dashboard build on the same helpers.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

EVENT_HANDLER = "live.event"  # dispatched to LiveConsumer.live_event


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


def send_to_group_on_commit(group: str, event: dict[str, Any]) -> None:
    """Publish after the surrounding transaction commits: never announce a rolled-back change."""
    transaction.on_commit(lambda: async_to_sync(send_to_group)(group, event))
