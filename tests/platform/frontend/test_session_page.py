"""The conversation page (``/sessions/<id>/``): who may read it, take it over, reply and hand it
back; bad form input changes nothing; another tenant's session is a 404 page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agentflow.models import Agent, AgentSession, Message, Run
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.hitl.conftest import audit_actions

BUTTON = re.compile(rb'data-action="(\w+)"')


@pytest.fixture
def session(acme: Persona, agent: Agent) -> AgentSession:
    with tenant_scope(acme.tenant.pk):
        row = AgentSession.objects.create(agent=agent, user_id="customer-1")
        Message.objects.create(session=row, role="user", content="my card was charged twice")
        Message.objects.create(session=row, role="assistant", content="Let me check that.")
    return row


def page(user: User_, session: AgentSession, **params: Any) -> Any:
    return user.get(f"/sessions/{session.pk}/", **params)


def act(user: User_, session: AgentSession, action: str, **fields: str) -> Any:
    return user.post(f"/sessions/{session.pk}/", {"action": action, **fields})


def buttons(response: Any) -> list[str]:
    return [b.decode() for b in BUTTON.findall(response.content)]


def messages_of(acme: Persona, session: AgentSession) -> list[tuple[str, str, int | None]]:
    with tenant_scope(acme.tenant.pk):
        rows = Message.objects.filter(session=session).order_by("created_at", "id")
        return [(m.role, m.content, m.author_id) for m in rows]


def mode_of(acme: Persona, session: AgentSession) -> tuple[str, int | None]:
    with tenant_scope(acme.tenant.pk):
        session.refresh_from_db()
    return session.mode, session.taken_by_id


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("viewer", []),
        ("reviewer", ["takeover"]),
        ("operator", ["takeover"]),
        ("owner", ["takeover"]),
    ],
)
def test_every_member_reads_the_conversation_and_reviewing_roles_may_take_it_over(
    acme: Persona, session: AgentSession, role: str, expected: list[str]
) -> None:
    user = member(acme.tenant, f"the-{role}", role)

    response = page(user, session)

    assert response.status_code == 200
    assert b"my card was charged twice" in response.content
    assert buttons(response) == expected
    assert b'data-mode="agent"' in response.content


def test_another_tenants_operator_gets_a_404_page_and_changes_nothing(
    acme: Persona, globex: Persona, session: AgentSession
) -> None:
    stranger = member(globex.tenant, "gus", "operator")

    assert page(stranger, session).status_code == 404
    assert act(stranger, session, "takeover").status_code == 404
    assert mode_of(acme, session) == ("agent", None)


def test_a_viewer_cannot_take_over(acme: Persona, session: AgentSession, viewer: User_) -> None:
    assert act(viewer, session, "takeover").status_code == 403
    assert act(viewer, session, "reply", content="hi").status_code == 403
    assert mode_of(acme, session) == ("agent", None)
    assert audit_actions(acme.tenant)["session.taken_over"] == 0


def test_take_over_reply_and_hand_back_from_the_page(
    acme: Persona, session: AgentSession, reviewer: User_
) -> None:
    taken = act(reviewer, session, "takeover")
    assert taken.status_code == 302
    shown = page(reviewer, session)
    assert buttons(shown) == ["handback", "reply"]
    assert b'data-mode="human"' in shown.content
    assert mode_of(acme, session) == ("human", reviewer.user.pk)

    sent = act(reviewer, session, "reply", content="Rita here: refunded.")
    assert sent.status_code == 302
    assert messages_of(acme, session)[-1] == ("assistant", "Rita here: refunded.", reviewer.user.pk)
    fragment = page(reviewer, session, fragment="conversation").json()
    assert fragment["session"]["mode"] == "human"
    assert fragment["messages"][-1]["author"] == {"id": reviewer.user.pk, "username": "rita"}

    assert act(reviewer, session, "handback").status_code == 302
    assert mode_of(acme, session) == ("agent", None)
    assert buttons(page(reviewer, session)) == ["takeover"]


@pytest.mark.parametrize("content", ["", "   ", "x" * 20_001, "nul \x00 byte"])
def test_a_bad_reply_is_refused_on_the_form_and_changes_nothing(
    acme: Persona, session: AgentSession, reviewer: User_, content: str
) -> None:
    assert act(reviewer, session, "takeover").status_code == 302
    before = messages_of(acme, session)

    refused = act(reviewer, session, "reply", content=content)

    assert refused.status_code == 422
    assert b'data-field-error="content"' in refused.content
    assert messages_of(acme, session) == before


def test_an_unknown_action_is_refused(
    acme: Persona, session: AgentSession, reviewer: User_
) -> None:
    assert act(reviewer, session, "delete").status_code == 422
    assert mode_of(acme, session) == ("agent", None)


def test_someone_elses_conversation_cannot_be_answered_or_handed_back(
    acme: Persona, session: AgentSession, reviewer: User_, operator: User_
) -> None:
    assert act(reviewer, session, "takeover").status_code == 302
    before = messages_of(acme, session)

    shown = page(operator, session)
    assert b'data-testid="taken-by-another"' in shown.content
    assert buttons(shown) == []
    for action in ("takeover", "reply", "handback"):
        refused = act(operator, session, action, content="me too")
        assert refused.status_code == 409, action
        assert b"Another person has taken this conversation over" in refused.content
    assert messages_of(acme, session) == before
    assert mode_of(acme, session) == ("human", reviewer.user.pk)


def test_the_run_page_links_to_its_conversation(
    acme: Persona, agent: Agent, session: AgentSession, viewer: User_
) -> None:
    with tenant_scope(acme.tenant.pk):
        run = Run.objects.create(agent=agent, session=session, user_id="customer-1", input="hi")

    response = viewer.get(f"/runs/{run.pk}/")

    assert f'href="/sessions/{session.pk}/"'.encode() in response.content
