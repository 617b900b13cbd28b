"""The dashboard's WebSocket: authenticated users only.

A socket joins its user's group and the group of every tenant the user is a member of,
so it receives that tenant's live events (HITL queue, runs) and never another tenant's.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from frontend.realtime import tenant_group, user_group

# 4401 mirrors HTTP 401 in the 4000-4999 range the WebSocket RFC leaves to applications.
CLOSE_UNAUTHENTICATED = 4401


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.joined: list[str] = [user_group(user.pk)]
        self.joined += [tenant_group(tenant_id) for tenant_id in await _member_tenants(user.pk)]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def live_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])


@database_sync_to_async
def _member_tenants(user_id: int) -> list[int]:
    from tenants.models import Membership, TenantStatus

    # Before any tenant scope exists: the user's own memberships decide which groups it
    # joins; a suspended tenant's members stop receiving its events, as its keys stop working.
    memberships = Membership.unscoped.filter(user_id=user_id, tenant__status=TenantStatus.ACTIVE)
    return list(memberships.values_list("tenant_id", flat=True))
