"""Human takeover (issue 19): a person takes a conversation over, the agent stays silent in
it, the person's replies reach the customer, and handing back lets the agent answer again.

Real parts throughout: the offline support agent's pipeline runs in this thread
(``services.execute_run``, as a worker runs it), signed-in members call the API with their
session cookies, and the channel test goes through a real Celery worker and a real local
HTTP server standing in for Slack's reply URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from agentflow import services, takeover
from agentflow.models import Agent, AgentSession, Message, Run, RunTransition
from governance.models import AuditEvent
from learning import services as learning_services
from tenants.context import tenant_scope
from tenants.models import Membership
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, ScriptedResponse
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.hitl.conftest import Member, audit_actions, eventually, make_member
from tests.platform.hitl.test_concurrency import concurrently
from tests.platform.learning.conftest import make_sender, ticket_payload

# Committed rows: the pipeline's stores read them on connections of their own.
pytestmark = pytest.mark.django_db(transaction=True)
ANSWERED = "how do I reset my password"  # the offline support agent answers it
CUSTOMER = "customer-1"
HI = {"content": "hi"}
SETTLED = ("completed", "awaiting_review", "failed")


def customer_says(agent: Agent, text: str, user_id: str = CUSTOMER) -> Run:
    """A customer message through start_run, processed in this thread as a worker does."""
    run = services.start_run(
        actor=ACTOR, agent=agent, request=services.RunRequest(user_id=user_id, message=text)
    )
    with tenant_scope(agent.tenant_id):
        services.execute_run(str(run.pk))
        run.refresh_from_db()
    return run


def session_of(agent: Agent, user_id: str = CUSTOMER) -> AgentSession:
    with tenant_scope(agent.tenant_id):
        return AgentSession.objects.get(agent=agent, user_id=user_id)


def conversation(member: Member | Persona, session: AgentSession) -> list[dict[str, Any]]:
    response = member.get(f"/api/v1/sessions/{session.pk}/conversation")
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def paths(session: AgentSession) -> dict[str, str]:
    base = f"/api/v1/sessions/{session.pk}"
    return {
        "detail": base,
        "takeover": f"{base}/takeover",
        "handback": f"{base}/handback",
        "messages": f"{base}/messages",
    }


@pytest.fixture
def agent(owner: Persona) -> Agent:
    return make_agent(owner)


@pytest.fixture
def rita(owner: Persona) -> Member:
    return make_member(owner.tenant, "rita", "reviewer")


def test_a_taken_over_conversation_is_answered_by_the_person_until_handed_back(
    owner: Persona, agent: Agent, rita: Member
) -> None:
    first = customer_says(agent, ANSWERED)
    assert first.status == "completed"
    session = session_of(agent)
    url = paths(session)
    assert rita.get(url["detail"]).json()["mode"] == "agent"

    taken = rita.post(url["takeover"])

    assert taken.status_code == 200, taken.content
    body = taken.json()
    assert (body["mode"], body["taken_by"]["username"]) == ("human", "rita")
    assert body["taken_at"] is not None
    assert rita.get(url["detail"]).json() == body
    # The customer writes again: a run, settled without the agent, no answer written.
    held = customer_says(agent, ANSWERED)
    assert held.status == "completed"
    assert (held.result or {})["content"] == ""
    assert (held.result or {})["metadata"] == {"handled_by": "human", "taken_by": rita.user.pk}
    with tenant_scope(owner.tenant.pk):
        assert RunTransition.objects.filter(run=held, reason="human_takeover").exists()
        assert list(Message.objects.filter(run=held).values_list("role", flat=True)) == ["user"]
    # The person answers; the conversation shows the reply, authored by them.
    sent = rita.post(url["messages"], {"content": "  Hi, Rita here: I reset it for you.  "})
    assert sent.status_code == 201, sent.content
    assert sent.json()["author"] == {"id": rita.user.pk, "username": "rita"}
    turns = [(m["role"], m["author"]) for m in conversation(owner, session)]
    assert turns == [
        ("user", None),
        ("assistant", None),  # the agent's first answer
        ("user", None),  # held for the person
        ("assistant", {"id": rita.user.pk, "username": "rita"}),
    ]
    assert conversation(owner, session)[-1]["content"] == "Hi, Rita here: I reset it for you."
    # Handed back: the agent answers the next message again.
    back = rita.post(url["handback"])
    assert back.status_code == 200, back.content
    assert (back.json()["mode"], back.json()["taken_by"], back.json()["taken_at"]) == (
        "agent",
        None,
        None,
    )
    answered = customer_says(agent, ANSWERED)
    assert answered.status == "completed"
    assert (answered.result or {})["content"]
    with tenant_scope(owner.tenant.pk):
        roles = Message.objects.filter(run=answered).values_list("role", flat=True)
        assert sorted(roles) == ["assistant", "user"]
    actions = audit_actions(owner.tenant)
    assert (
        actions["session.taken_over"],
        actions["session.replied"],
        actions["session.handed_back"],
    ) == (1, 1, 1)


def test_a_run_waiting_when_the_session_is_taken_over_is_not_answered(
    owner: Persona, agent: Agent, rita: Member
) -> None:
    """Accepted while the agent answered, picked up after the takeover: the person has it."""
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    waiting = services.start_run(
        actor=ACTOR, agent=agent, request=services.RunRequest(user_id=CUSTOMER, message=ANSWERED)
    )
    assert rita.post(paths(session)["takeover"]).status_code == 200
    with tenant_scope(owner.tenant.pk):
        services.execute_run(str(waiting.pk))
        waiting.refresh_from_db()
        assert (waiting.result or {})["metadata"]["handled_by"] == "human"
        assert not Message.objects.filter(run=waiting, role="assistant").exists()


def test_replies_and_hand_backs_need_the_session_to_be_yours(
    owner: Persona, agent: Agent, rita: Member
) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    url = paths(session)
    olga = make_member(owner.tenant, "olga", "operator")
    before = len(conversation(owner, session))

    not_taken = rita.post(url["messages"], {"content": "hello"})
    assert (not_taken.status_code, not_taken.json()["error_type"]) == (
        409,
        "session_not_taken_over",
    )
    assert rita.post(url["handback"]).json()["error_type"] == "session_not_taken_over"
    assert rita.post(url["takeover"]).status_code == 200
    again = rita.post(url["takeover"])
    assert (again.status_code, again.json()["error_type"]) == (409, "already_taken")
    for response in (
        olga.post(url["takeover"]),
        olga.post(url["messages"], {"content": "hello"}),
        olga.post(url["handback"]),
    ):
        assert response.status_code == 409, response.content
        assert response.json()["error_type"] == "taken_by_another"
        assert response.json()["taken_by"] == rita.user.pk
    assert len(conversation(owner, session)) == before
    detail = rita.get(url["detail"]).json()
    assert (detail["mode"], detail["taken_by"]["username"]) == ("human", "rita")
    assert audit_actions(owner.tenant)["session.taken_over"] == 1


def test_a_session_whose_taker_left_can_be_handed_back_by_another_reviewer(
    owner: Persona, agent: Agent, rita: Member
) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    url = paths(session)
    olga = make_member(owner.tenant, "olga", "operator")
    assert rita.post(url["takeover"]).status_code == 200
    assert olga.post(url["handback"]).json()["error_type"] == "taken_by_another"

    with tenant_scope(owner.tenant.pk):
        Membership.objects.filter(user=rita.user).delete()  # rita left the team
    released = olga.post(url["handback"])

    assert released.status_code == 200, released.content
    assert released.json()["mode"] == "agent"
    with tenant_scope(owner.tenant.pk):
        event = AuditEvent.unscoped.get(tenant=owner.tenant, action="session.handed_back")
    assert (event.actor_id, event.changes["taken_by"]) == (str(olga.user.pk), rita.user.pk)


def test_two_people_taking_over_at_once_one_wins(owner: Persona, agent: Agent) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    takers = [make_member(owner.tenant, f"taker{i}", "reviewer") for i in range(6)]
    # One client per thread: Django's test Client is not shared across threads.
    clients = []
    for member in takers:
        client = Client(raise_request_exception=False)
        client.force_login(member.user)
        clients.append(client)

    responses = concurrently(
        6, lambda i: clients[i].post(paths(session)["takeover"], content_type="application/json")
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409, 409, 409, 409, 409], codes
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    losers = [r.json() for r in responses if r.status_code == 409]
    assert {(e["error_type"], e["taken_by"]) for e in losers} == {
        ("taken_by_another", takers[winner].user.pk)
    }
    with tenant_scope(owner.tenant.pk):
        session.refresh_from_db()
    assert session.taken_by_id == takers[winner].user.pk
    assert audit_actions(owner.tenant)["session.taken_over"] == 1


def test_who_may_take_over(owner: Persona, agent: Agent, outsider: Persona) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    url = paths(session)
    viewer = make_member(owner.tenant, "vic", "viewer")
    stranger = make_member(outsider.tenant, "gus", "operator")

    # Viewers read the session and its conversation, and may not take it over.
    assert viewer.get(url["detail"]).status_code == 200
    for path, body in ((url["takeover"], {}), (url["handback"], {}), (url["messages"], HI)):
        refused = viewer.post(path, body)
        assert (refused.status_code, refused.json()["error_type"]) == (403, "permission_denied")
    # An API key is no person.
    keyed = owner.post(url["takeover"])
    assert (keyed.status_code, keyed.json()["error_type"]) == (403, "person_required")
    # Another tenant's operator: the session does not exist for them.
    assert stranger.get(url["detail"]).status_code == 404
    assert stranger.get(f"{url['detail']}/conversation").status_code == 404
    for path, body in ((url["takeover"], {}), (url["handback"], {}), (url["messages"], HI)):
        assert stranger.post(path, body).status_code == 404
    assert rita_like_roles_take_over(owner, session) == ["reviewer", "operator", "owner"]
    with tenant_scope(owner.tenant.pk):
        session.refresh_from_db()
    assert session.mode == "agent"  # every taker handed it back


def rita_like_roles_take_over(owner: Persona, session: AgentSession) -> list[str]:
    """Each reviewing role takes the session over, replies and hands it back in turn."""
    took = []
    for role in ("reviewer", "operator", "owner"):
        member = make_member(owner.tenant, f"the-{role}", role)
        url = paths(session)
        if member.post(url["takeover"]).status_code != 200:
            continue
        assert member.post(url["messages"], {"content": f"{role} here"}).status_code == 201
        assert member.post(url["handback"]).status_code == 200
        took.append(role)
    return took


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": 42}, "content"),
        ({"content": "x" * 20_001}, "content"),
        ({"content": "nul \u0000 byte"}, "content"),
        ({"content": "ok", "role": "user"}, "role"),
    ],
)
def test_a_bad_reply_is_refused_naming_the_field_and_changes_nothing(
    owner: Persona, agent: Agent, rita: Member, body: dict[str, Any], field: str
) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)
    assert rita.post(paths(session)["takeover"]).status_code == 200
    before = conversation(owner, session)

    refused = rita.post(paths(session)["messages"], body)

    assert refused.status_code == 422, refused.content
    assert field in refused.json()["errors"]
    assert conversation(owner, session) == before
    assert audit_actions(owner.tenant)["session.replied"] == 0


def test_a_takeover_with_a_body_is_refused_and_changes_nothing(
    owner: Persona, agent: Agent, rita: Member
) -> None:
    customer_says(agent, ANSWERED)
    session = session_of(agent)

    refused = rita.post(paths(session)["takeover"], {"mode": "human"})

    assert refused.status_code == 422
    assert "mode" in refused.json()["errors"]
    assert rita.get(paths(session)["detail"]).json()["mode"] == "agent"
    assert audit_actions(owner.tenant)["session.taken_over"] == 0


def test_an_unknown_session_is_404_and_a_malformed_body_is_422(rita: Member) -> None:
    missing = "/api/v1/sessions/00000000-0000-0000-0000-000000000000"
    assert rita.get(missing).status_code == 404
    assert rita.post(f"{missing}/takeover").status_code == 404
    response = rita.client.post(f"{missing}/messages", "{not json", content_type="application/json")
    assert response.status_code in (400, 404, 422)


def test_the_schema_documents_the_takeover_endpoints(owner: Persona) -> None:
    schema = owner.client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for operation in ("sessions_retrieve", "sessions_takeover", "sessions_handback"):
        assert operation in text
    assert "sessions_reply" in text


# --- a channel session: the person's reply goes where the agent's answers go ---------------


def _ok(request: RecordedRequest) -> ScriptedResponse:
    return ScriptedResponse(200, {"ok": True})


@pytest.fixture
def slack() -> Iterator[FakeOpenAIServer]:
    """A local HTTP server standing in for Slack's incoming webhook (records every POST)."""
    with FakeOpenAIServer(default=_ok) as fake:
        yield fake


@pytest.mark.slow
def test_a_persons_reply_in_a_slack_session_goes_to_the_rules_reply_url(
    owner: Persona,
    agent: Agent,
    slack: FakeOpenAIServer,
    settings: Any,
    celery_worker_app: object,
) -> None:
    origin = slack.base_url.removesuffix("/v1")
    settings.AGENTFLOW = {**settings.AGENTFLOW, "WEBHOOK_REPLY_ALLOWED_URLS": [f"{origin}/slack/"]}
    learning_services.create_rule(
        actor=ACTOR,
        tenant_id=owner.tenant.pk,
        name="mentions",
        event_kind="slack.app_mention",
        agent=agent,
        reply_url=f"{origin}/slack/hooks/T1",
    )
    sender = make_sender(owner, "slack")
    hooks = "/slack/hooks/T1"

    def replies() -> list[dict[str, Any]]:
        return [dict(r.body) for r in slack.requests if r.path == hooks]

    sender.deliver(ticket_payload("slack", ticket="1001", text=ANSWERED), delivery_id="d-1")
    first = eventually(
        lambda: Run.unscoped.filter(agent=agent, status__in=SETTLED).first(), 60, "the first run"
    )
    # The agent's answer goes to Slack (an escalated one waits for a reviewer instead).
    if first.status == "completed":
        eventually(replies, 30, "the agent's answer in Slack")
    answered_by_agent = len(replies())
    session = AgentSession.unscoped.get(agent=agent)
    rita = make_member(owner.tenant, "rita", "reviewer")
    taken = rita.post(paths(session)["takeover"])
    assert taken.json()["channel"] == "slack"

    sender.deliver(ticket_payload("slack", ticket="1002", text=ANSWERED), delivery_id="d-2")
    held = eventually(lambda: _held_run(agent), 60, "the second message held for the person")
    assert held.result["metadata"]["handled_by"] == "human"
    sent = rita.post(paths(session)["messages"], {"content": "Rita here, on it."})
    assert sent.status_code == 201, sent.content

    eventually(lambda: len(replies()) > answered_by_agent, 30, "the person's reply in Slack")
    (person,) = replies()[answered_by_agent:]
    assert person["text"] == "Rita here, on it."
    assert (person["channel"], person["thread_ts"]) == ("C1", "1002.000100")
    assert (person["run_id"], person["message_id"], person["from"]) == (
        str(held.pk),
        sent.json()["message_id"],
        "human",
    )


def _held_run(agent: Agent) -> Run | None:
    for run in Run.unscoped.filter(agent=agent, status="completed"):
        if (run.result or {}).get("metadata", {}).get("handled_by") == takeover.HANDLED_BY_HUMAN:
            return run
    return None
