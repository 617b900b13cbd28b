"""Readable everywhere (issue 19): moments as <time>, actors by name, details as labelled
fields, sources by article title, money to the cent, runs at a glance, helpful empty states."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from agentflow.models import Agent, AgentSession, Run, RunStatus
from frontend.templatetags.frontend import cost, fields, money, when
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_
from tests.platform.hitl.conftest import escalated_run, review_of

TIME = re.compile(rb'<time class="when" datetime="([^"]+)"')


def stored_run(agent: Agent, message: str, **fields_: object) -> Run:
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer-9")
        return Run.objects.create(
            agent=agent, session=session, user_id="customer-9", input=message, **fields_
        )


def test_money_is_to_the_cent_with_its_currency() -> None:
    assert money(Decimal("1.234")) == "$1.23"
    assert money("1234.5") == "$1,234.50"
    assert money(Decimal("0.005")) == "< $0.01"  # one cheap model call is not "$0.00"
    assert money(0) == "$0.00"
    assert "offline provider: free" in cost(Decimal(0), True)
    assert "offline provider: free" not in cost(Decimal("0.02"), True)
    assert 'title="0.021 USD">$0.02<' in cost("0.021", False)


def test_moments_and_details_render_as_markup_not_reprs() -> None:
    assert when("2026-12-02T13:28:23.952009Z") == (
        '<time class="when" datetime="2026-12-02T13:28:23.952009Z" '
        'title="2026-12-02T13:28:23.952009Z">2026-12-02 13:28 UTC</time>'
    )
    html = fields({"kind": "low_confidence", "escalation_level": 2, "to": None, "x": [1]})
    assert '<dt>Kind</dt><dd data-key="kind">low_confidence</dd>' in html
    assert "<dt>Escalation level</dt>" in html
    assert '<dd data-key="to">—</dd>' in html
    assert "{'" not in html
    assert "<script>" not in fields({"a": "<script>"})  # escaped


def test_the_runs_list_shows_message_intent_confidence_and_free_cost(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    long = "Where is my parcel? " * 20
    stored_run(
        agent,
        long,
        status=RunStatus.COMPLETED,
        result={"content": "Here.", "intent": "ORDER_STATUS", "confidence": 0.91234},
    )
    stored_run(agent, "Still thinking", status=RunStatus.PROCESSING)
    rows = viewer.get("/runs/", fragment="rows").json()["rows"]
    settled = next(row for row in rows if row["status"] == "completed")
    assert settled["excerpt"] == (long.strip()[:99].rstrip() + "…")
    assert len(settled["excerpt"]) <= 100
    assert settled["intent"] == "ORDER_STATUS"
    assert settled["confidence"] == 0.9123
    busy = next(row for row in rows if row["status"] == "processing")
    assert (busy["excerpt"], busy["intent"], busy["confidence"]) == ("Still thinking", None, None)

    page = viewer.get("/runs/").content
    assert b"Where is my parcel? Where is my parcel?" in page
    assert b'data-field="intent">ORDER_STATUS<' in page
    assert b'data-field="confidence">0.91<' in page
    assert b"offline provider: free" in page  # the test agent runs on the offline provider
    assert TIME.search(page)
    assert b"(UTC)" not in page


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_review_history_names_people_and_labels_details(
    acme: Persona, agent: Agent, operator: User_
) -> None:
    run = escalated_run(agent)
    assert run.result is not None
    item = review_of(run)
    assert operator.post(f"/hitl/{item.pk}/", {"action": "claim"}).status_code == 302
    page = operator.get(f"/hitl/{item.pk}/").content.decode()
    history = page.split('data-testid="request-history"', 1)[1]
    assert '<td data-field="actor">otto</td>' in history  # by name, not "user 7"
    assert f"user {operator.user.pk}" not in history
    assert '<dl class="kv">' in history
    assert "{&#x27;" not in history
    assert "{'" not in history
    assert TIME.search(history.encode())
    # Sources by the article's title, linked to it on the agent's page.
    sources = page.split('data-testid="request-sources"', 1)[1].split("</ul>", 1)[0]
    assert any(source["kind"] == "knowledge" for source in run.result["sources"])
    for source in run.result["sources"]:
        assert source["title"] in sources
        if source["kind"] == "knowledge":
            document = source["id"].split("#")[0]
            assert f'href="/agents/{agent.pk}/#doc-{document}"' in sources


def test_the_audit_trail_names_actors_and_labels_changes(
    acme: Persona, agent: Agent, owner: User_
) -> None:
    created = owner.post(
        f"/tenants/{acme.tenant.pk}/", {"action": "create_key", "name": "ci", "scopes": "read"}
    )
    assert created.status_code == 201
    page = owner.get("/audit/").content.decode()
    row = page.split('data-field="action">api_key.issued<', 1)[0].rsplit("<tr", 1)[1]
    assert '<td data-field="actor" title="user:' in row
    assert ">olivia</td>" in row
    assert "{'" not in page
    assert TIME.search(page.encode())


def test_empty_pages_say_what_to_do_next(acme: Persona, owner: User_, viewer: User_) -> None:
    runs = owner.get("/runs/").content
    assert b"No runs yet. Try an agent from its page" in runs
    assert b"No runs match these filters" in owner.get("/runs/", status="failed").content
    assert b"nothing waits for a person" in owner.get("/hitl/").content
    assert b"Create one below from a blueprint" in owner.get("/agents/").content
    assert b"An operator or owner of this tenant creates them" in viewer.get("/agents/").content


def test_the_overview_says_why_cost_is_zero(acme: Persona, agent: Agent, owner: User_) -> None:
    page = owner.get("/").content
    assert b'data-testid="cost-offline"' in page
    assert b'data-metric="cost-today">$0.00<' in page
