"""Takeover's live events over the real socket: ``session.updated`` and ``session.message``
reach the tenant's members, and a member restricted to some agents only gets those of the
agents it may see."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from agentflow import takeover
from agentflow.models import Agent, AgentSession
from governance import services as governance
from governance.audit import Actor
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, member
from tests.platform.frontend.test_live import collect, connect

pytestmark = pytest.mark.django_db(transaction=True)


def _taken_and_answered(agent: Agent, taker: User_) -> str:
    """The taker takes the agent's session over and replies; the session's id."""
    with tenant_scope(agent.tenant_id):
        session = AgentSession.objects.create(agent=agent, user_id="customer-1")
        actor = Actor("user", str(taker.user.pk))
        takeover.take_over(actor=actor, user=taker.user, session=session)
        takeover.reply(actor=actor, user=taker.user, session=session, content="Hello, Rita here.")
    return str(session.pk)


async def test_session_events_reach_only_members_who_may_see_the_agent(
    acme: Persona, agent: Agent
) -> None:
    other = await sync_to_async(make_agent)(acme, "billing")
    rita = await sync_to_async(member)(acme.tenant, "rita", "reviewer")
    vic = await sync_to_async(member)(acme.tenant, "vic", "viewer")
    user = await sync_to_async(User.objects.get)(pk=vic.user.pk)
    await sync_to_async(governance.assign_role)(
        actor=ACTOR, tenant=acme.tenant, user=user, role="viewer", agents=[str(agent.pk)]
    )
    everything = await connect(rita, f"?tenant={acme.tenant.pk}")
    restricted = await connect(vic, f"?tenant={acme.tenant.pk}")

    hidden = await sync_to_async(_taken_and_answered)(other, rita)
    visible = await sync_to_async(_taken_and_answered)(agent, rita)

    def both_replies(got: list[dict[str, object]]) -> bool:
        return sum(e["type"] == "session.message" for e in got) == 2

    seen = await collect(everything, both_replies)
    updated = [e for e in seen if e["type"] == "session.updated"]
    assert {e["session"]["id"] for e in updated} == {hidden, visible}
    assert all(e["session"]["mode"] == "human" for e in updated)
    assert all(e["session"]["taken_by"]["username"] == "rita" for e in updated)
    replies = [e for e in seen if e["type"] == "session.message"]
    assert {e["message"]["content"] for e in replies} == {"Hello, Rita here."}
    assert all(e["message"]["author"]["username"] == "rita" for e in replies)

    got = await collect(restricted, lambda got: any(e["type"] == "session.message" for e in got))
    assert {e["session"]["id"] for e in got} == {visible}
    assert hidden not in str(got)
    for communicator in (everything, restricted):
        await communicator.disconnect()
