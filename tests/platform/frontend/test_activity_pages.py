"""/activity/ and /graph/ (issue 19): the activity stream filtered, paginated and opened as
labelled fields; a customer's journey and similar resolutions found from a search box."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentflow.models import Agent
from frontend.views_activity import ACTIVITY_PAGE_SIZE
from governance import services as governance
from learning import processing, services
from learning.models import ActivityEvent, GraphNode
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, member

ROLES = ("viewer", "reviewer", "operator", "owner")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _run_event(persona: Persona, agent: Agent, minutes: int, **extra: Any) -> ActivityEvent:
    payload = {
        "run_id": "0f6c3f0e-2b5e-4a53-9d6c-1c2e3f4a5b6c",
        "agent_id": str(agent.pk),
        "agent_name": agent.name,
        "intent": "billing",
        "answer": "Refunds take 5 business days.",
        "sources": [{"kind": "knowledge", "id": "doc-1", "title": "Refunds"}],
        **extra,
    }
    return services.record_event(
        persona.tenant.pk,
        "run.completed",
        payload,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def _ticket(persona: Persona, minutes: int, customer: str, ticket: str, category: str) -> str:
    payload = {
        "type": "ticket.created",
        "customer": {"id": customer},
        "ticket": {"id": ticket, "subject": f"{category} problem {ticket}", "category": category},
        "text": "I was charged twice",
    }
    event = services.record_event(
        persona.tenant.pk,
        "generic.ticket.created",
        payload,
        "generic",
        occurred_at=T0 + timedelta(minutes=minutes),
    )
    assert processing.process_event(persona.tenant.pk, str(event.pk)) == "processed"
    return str(event.pk)


def _solved(persona: Persona, minutes: int, ticket: str, category: str, fix: str) -> None:
    payload = {
        "type": "ticket.solved",
        "ticket": {"id": ticket, "category": category, "status": "solved"},
        "resolution": {
            "id": fix,
            "summary": f"applied {fix}",
            "articles": [{"id": "kb-7", "title": "Double charges explained"}],
        },
    }
    event = services.record_event(
        persona.tenant.pk,
        "generic.ticket.solved",
        payload,
        "generic",
        occurred_at=T0 + timedelta(minutes=minutes),
    )
    assert processing.process_event(persona.tenant.pk, str(event.pk)) == "processed"


def _node(persona: Persona, key: str) -> GraphNode:
    return GraphNode.unscoped.get(tenant=persona.tenant, key=key)


def _rows(body: str) -> list[str]:
    return [part.split('"', 1)[0] for part in body.split('data-event-id="')[1:]]


@pytest.mark.parametrize("role", ROLES)
def test_every_member_reads_the_stream_and_opens_an_event(
    acme: Persona, agent: Agent, role: str
) -> None:
    user = member(acme.tenant, f"a-{role}", role)
    event = _run_event(acme, agent, 0, metadata={"nested": {"deep": True}})
    page = user.get("/activity/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-nav="activity"' in body
    assert _rows(body) == [str(event.pk)]
    detail = user.get(f"/activity/{event.pk}/")
    assert detail.status_code == 200
    text = detail.content.decode()
    payload = text.split('data-testid="event-payload"', 1)[1]
    # Labelled fields, nested ones nested, never a dict repr.
    assert '<dt>Agent name</dt><dd data-key="agent_name">support</dd>' in payload
    assert '<dd data-key="nested"><dl class="kv"><dt>Deep</dt><dd data-key="deep">yes' in payload
    assert "{'" not in payload
    assert f'href="/runs/{event.payload["run_id"]}/"' in text


def test_filters_by_type_agent_and_dates_and_pages(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    other = make_agent(acme, "billing")
    mine = [_run_event(acme, agent, minute) for minute in range(ACTIVITY_PAGE_SIZE + 5)]
    theirs = _run_event(acme, other, 500)
    ticket = _ticket(acme, 600, "dana", "t1", "billing")

    first = viewer.get("/activity/").content.decode()
    assert _rows(first)[:2] == [ticket, str(theirs.pk)]  # newest first
    assert len(_rows(first)) == ACTIVITY_PAGE_SIZE
    assert f"{ACTIVITY_PAGE_SIZE + 7} events" in first
    second = viewer.get("/activity/", page=2).content.decode()
    assert len(_rows(second)) == 7
    assert _rows(second)[-1] == str(mine[0].pk)

    assert _rows(viewer.get("/activity/", kind="generic.*").content.decode()) == [ticket]
    by_agent = viewer.get("/activity/", agent=str(other.pk)).content.decode()
    assert _rows(by_agent) == [str(theirs.pk)]
    window = viewer.get(
        "/activity/", since="2026-03-02 09:02", until="2026-03-02 09:04", kind="run.completed"
    ).content.decode()
    assert _rows(window) == [str(mine[3].pk), str(mine[2].pk)]
    # The pager keeps the filters.
    paged = viewer.get("/activity/", kind="run.*").content.decode()
    assert "?kind=run.%2A&amp;page=2" in paged


def test_bad_filters_are_named_and_show_nothing_wrong(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    _run_event(acme, agent, 0)
    before = ActivityEvent.unscoped.count()
    for params, field in (
        ({"kind": "run.*.x"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-03-02 10:00", "until": "2026-03-02 09:00"}, "until"),
        ({"agent": "not-an-agent"}, "agent"),
        ({"source": "fax"}, "source"),
    ):
        page = viewer.get("/activity/", **params)
        assert page.status_code == 400, params
        assert f'data-field-error="{field}"'.encode() in page.content, params
    assert viewer.get("/activity/", page="999").status_code == 200  # the last page
    assert viewer.get("/activity/not-a-uuid/").status_code == 404
    assert ActivityEvent.unscoped.count() == before


def test_another_tenants_events_are_not_found(acme: Persona, globex: Persona, agent: Agent) -> None:
    event = _run_event(acme, agent, 0)
    outsider = member(globex.tenant, "gus", "operator")
    assert str(event.pk) not in outsider.get("/activity/").content.decode()
    assert outsider.get(f"/activity/{event.pk}/").status_code == 404


def test_a_restricted_member_sees_only_its_agents_events(acme: Persona, agent: Agent) -> None:
    other = make_agent(acme, "billing")
    viewer = member(acme.tenant, "vera", "viewer")
    governance.assign_role(
        actor=ACTOR, tenant=acme.tenant, user=viewer.user, role="viewer", agents=[str(agent.pk)]
    )
    seen = _run_event(acme, agent, 0)
    hidden = _run_event(acme, other, 1)
    webhook = _ticket(acme, 2, "dana", "t1", "billing")
    assert set(_rows(viewer.get("/activity/").content.decode())) == {str(seen.pk), webhook}
    assert viewer.get(f"/activity/{hidden.pk}/").status_code == 404


@pytest.fixture
def history(acme: Persona) -> dict[str, str]:
    """Dana opens a billing ticket solved with the known fix; Eve's and Finn's were solved
    with it too, Gus's with another."""
    ids = {"dana": _ticket(acme, 0, "dana", "t1", "billing")}
    _ticket(acme, 1, "eve", "t2", "billing")
    _solved(acme, 10, "t2", "billing", "fix-refund")
    _ticket(acme, 2, "finn", "t3", "billing")
    _solved(acme, 11, "t3", "billing", "fix-refund")
    _ticket(acme, 3, "gus", "t4", "billing")
    _solved(acme, 12, "t4", "billing", "fix-card")
    _ticket(acme, 4, "dan", "t5", "login")
    return ids


@pytest.mark.parametrize("role", ROLES)
def test_every_member_follows_a_customers_journey(
    acme: Persona, history: dict[str, str], role: str
) -> None:
    user = member(acme.tenant, f"g-{role}", role)
    page = user.get("/graph/", q="dana")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="customer-key">generic:user:dana<' in body
    journey = body.split('data-testid="journey"', 1)[1].split("</table>", 1)[0]
    assert 'data-step="opened"' in journey
    assert "billing problem t1" in journey
    assert f'href="/activity/{history["dana"]}/"' in journey
    similar = body.split('data-testid="similar"', 1)[1].split("</table>", 1)[0]
    keys = [p.split('"', 1)[0] for p in similar.split('data-resolution-key="')[1:]]
    assert keys == ["generic:resolution:fix-refund", "generic:resolution:fix-card"]
    assert 'data-field="tickets">2<' in similar
    assert "Double charges explained" in similar


def test_a_search_with_several_matches_lists_them(acme: Persona, history: dict[str, str]) -> None:
    viewer = member(acme.tenant, "vic2", "viewer")
    body = viewer.get("/graph/", q="da").content.decode()  # dana and dan
    matches = body.split('data-testid="customer-matches"', 1)[1]
    assert "generic:user:dana" in matches
    assert "generic:user:dan<" in matches
    assert 'data-testid="journey"' not in body
    dan = _node(acme, "generic:user:dan")
    chosen = viewer.get("/graph/", q="da", customer=str(dan.pk)).content.decode()
    assert 'data-testid="customer-key">generic:user:dan<' in chosen
    assert 'data-testid="similar-empty"' in chosen  # no other login ticket was resolved
    nobody = viewer.get("/graph/", q="zed").content.decode()
    assert 'data-testid="no-customer"' in nobody


def test_bad_graph_input_and_foreign_nodes(
    acme: Persona, globex: Persona, history: dict[str, str]
) -> None:
    dana = _node(acme, "generic:user:dana")
    ticket = _node(acme, "generic:ticket:t1")
    before = GraphNode.unscoped.count()
    outsider = member(globex.tenant, "gus", "operator")
    assert outsider.get("/graph/", customer=str(dana.pk)).status_code == 404
    assert outsider.get("/graph/", q="dana").content.decode().count("generic:user:dana") == 0
    viewer = member(acme.tenant, "vic3", "viewer")
    assert viewer.get("/graph/", customer="nope").status_code == 404
    assert viewer.get("/graph/", customer=str(ticket.pk)).status_code == 404  # not a customer
    assert viewer.get("/graph/", customer=str(dana.pk), ticket=str(dana.pk)).status_code == 404
    long = viewer.get("/graph/", q="x" * 201)
    assert long.status_code == 400
    assert b'data-field-error="q"' in long.content
    assert GraphNode.unscoped.count() == before
