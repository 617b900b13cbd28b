"""The dashboard's WebSocket: authenticated users only.

A socket joins its user's group and the groups of the tenants it may watch, so it receives
those tenants' live events (HITL queue, runs) and never another tenant's:

* no ``?tenant=``: every tenant the user is an active member of;
* ``?tenant=<id>``: that tenant only (the page's current tenant), when the user is an
  active member of it, or a platform admin (``tenants.roles.is_platform_admin``);
* ``?tenant=all``: a platform admin's overview of every tenant that is not suspended
  (for anyone else: their memberships, as without the parameter).

A member restricted to some agents (governance) gets only the events of those agents:
the visible set is read once at connect, so an agent created or granted later stays
hidden until the page reconnects (fails closed).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agentflow.core.realtime import tenant_group, user_group
from governance.services import visible_agents
from tenants.context import tenant_scope
from tenants.models import Membership, Tenant, TenantStatus
from tenants.roles import is_platform_admin

# 4401 mirrors HTTP 401 in the 4000-4999 range the WebSocket RFC leaves to applications.
CLOSE_UNAUTHENTICATED = 4401
# Where each event type carries the agent it belongs to.
_AGENT_OF = {"run": "run", "hitl": "request", "learning": "golden_path", "session": "session"}


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs((self.scope.get("query_string") or b"").decode("latin-1"))
        wanted = (query.get("tenant") or [None])[0]
        watched = await _watched_tenants(user, wanted)
        # group -> the agent ids its events may name (None: every agent).
        self.visible: dict[str, frozenset[str] | None] = {
            tenant_group(tenant_id): agents for tenant_id, agents in watched.items()
        }
        self.joined: list[str] = [user_group(user.pk), *self.visible]
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
        event = message["event"]
        if self._may_see(message.get("group"), event):
            await self.send_json(event)

    async def live_events(self, message: dict[str, Any]) -> None:
        """Several events of one group in one channel message (``agentflow.core.realtime``'s
        outbox): the same frames, in the same order, as one ``live_event`` each."""
        group = message.get("group")
        for event in message["events"]:
            if self._may_see(group, event):
                await self.send_json(event)

    def _may_see(self, group: str | None, event: dict[str, Any]) -> bool:
        agents = self.visible.get(group) if group else None
        if agents is None:
            return True
        family = str(event.get("type", "")).split(".", 1)[0]
        body = event.get(_AGENT_OF.get(family, ""))
        agent_id = body.get("agent_id") if isinstance(body, dict) else None
        return agent_id is None or str(agent_id) in agents


@database_sync_to_async
def _watched_tenants(user: Any, wanted: str | None) -> dict[int, frozenset[str] | None]:
    if is_platform_admin(user) and wanted is not None:
        # Platform admins watch any tenant (the loud cross-tenant read is the point here).
        tenants = Tenant.objects.exclude(status=TenantStatus.SUSPENDED)
        if wanted != "all":
            tenants = tenants.filter(pk=int(wanted)) if wanted.isdigit() else tenants.none()
        return dict.fromkeys(tenants.values_list("pk", flat=True))
    # Before any tenant scope exists: the user's own memberships decide which groups it
    # joins; a suspended tenant's members stop receiving its events, as its keys stop working.
    memberships = Membership.unscoped.filter(user_id=user.pk, tenant__status=TenantStatus.ACTIVE)
    if wanted is not None and wanted != "all":
        if not wanted.isdigit():
            return {}
        memberships = memberships.filter(tenant_id=int(wanted))
    watched: dict[int, frozenset[str] | None] = {}
    for tenant_id in memberships.values_list("tenant_id", flat=True):
        watched[tenant_id] = _visible_agent_ids(user, tenant_id)
    return watched


def _visible_agent_ids(user: Any, tenant_id: int) -> frozenset[str] | None:
    """The agents ``user`` may watch in the tenant (None: every one), read in its scope."""
    with tenant_scope(tenant_id):
        visible = visible_agents(user, tenant_id)
        if visible is None:
            return None
        return frozenset(str(pk) for pk in visible.values_list("pk", flat=True))
