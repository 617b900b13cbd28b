"""The activity stream, customer journeys, event rules and policies in headless Chromium,
at desktop and phone width (issue 19): an operator opens an event's payload, finds a
customer from the search box, creates a rule and sets a reviewer away; every page fits a
390 px screen. Screenshots: test-artifacts/screenshots/ (docs/screenshots/ with
UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

from typing import Any

import pytest

from learning import processing, services
from tests.e2e.conftest import UI
from tests.e2e.test_dashboard import member
from tests.e2e.test_dashboard_phone import PHONE, fits_the_screen
from tests.platform.api.conftest import make_agent, make_persona

pytestmark = pytest.mark.django_db(transaction=True)


def _event(tenant_id: int, kind: str, payload: dict[str, Any], source: str) -> str:
    event = services.record_event(tenant_id, kind, payload, source)
    processing.process_event(tenant_id, str(event.pk))
    return str(event.pk)


def _history(tenant_id: int) -> str:
    """Dana's double charge, solved with the fix Eve's ticket was solved with too."""
    first = ""
    for customer, ticket in (("dana", "t1"), ("eve", "t2")):
        event_id = _event(
            tenant_id,
            "generic.ticket.created",
            {
                "type": "ticket.created",
                "customer": {"id": customer},
                "ticket": {"id": ticket, "subject": "Charged twice", "category": "billing"},
                "text": "I was charged twice for my subscription",
            },
            "generic",
        )
        first = first or event_id
    _event(
        tenant_id,
        "generic.ticket.solved",
        {
            "type": "ticket.solved",
            "ticket": {"id": "t2", "category": "billing", "status": "solved"},
            "resolution": {
                "id": "fix-refund",
                "summary": "Refunded the duplicate charge",
                "articles": [{"id": "kb-7", "title": "Double charges explained"}],
            },
        },
        "generic",
    )
    return first


def test_an_operator_works_the_integration_pages_at_desktop_and_phone_width(ui: UI) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    first_event = _history(acme.tenant.pk)
    otto = member(acme.tenant, "otto", "operator")
    rita = member(acme.tenant, "rita", "reviewer")
    page = ui.signed_in(otto)

    page.goto("/activity/")
    page.wait_for_selector(f'tr[data-event-id="{first_event}"]')
    ui.screenshot(page, "activity")
    page.click(f'tr[data-event-id="{first_event}"] a[data-field=kind]')
    page.wait_for_selector("[data-testid=event-payload] dd[data-key=customer]")
    assert "I was charged twice" in page.text_content("[data-testid=event-payload]")

    page.goto("/graph/")
    page.fill("input[name=q]", "dana")
    page.click("[data-testid=customer-search] button[type=submit]")
    page.wait_for_selector("[data-testid=customer-key]")
    assert page.text_content("[data-testid=customer-key]") == "generic:user:dana"
    similar = page.text_content("[data-testid=similar]")
    assert "Refunded the duplicate charge" in similar
    assert "Double charges explained" in similar
    ui.screenshot(page, "graph")

    page.goto("/rules/")
    page.fill("#id_name", "new zendesk tickets")
    page.fill("#id_event_kind", "zendesk.ticket.created")
    page.select_option("#id_agent", str(agent.pk))
    page.fill("#id_conditions", '{"priority": "high"}')
    page.click("[data-testid=rule-create-form] button[type=submit]")
    page.wait_for_selector("tr[data-rule-id] [data-field=name]")
    assert page.text_content("tr[data-rule-id] [data-field=name]") == "new zendesk tickets"
    page.fill("#id_name", "a second one")  # refused next to its field
    page.fill("#id_event_kind", "Not A Kind")
    page.click("[data-testid=rule-create-form] button[type=submit]")
    page.wait_for_selector("[data-field-error=event_kind]")
    ui.screenshot(page, "rules")

    page.goto("/policies/")
    reviewer_row = f'tr[data-reviewer-id="{rita.pk}"]'
    page.click(f"{reviewer_row} [data-action=available]")
    page.wait_for_selector(f"{reviewer_row} [data-action=away]")
    assert page.text_content(f"{reviewer_row} [data-field=available]").strip() == "available"
    ui.screenshot(page, "policies")

    page.set_viewport_size(PHONE)
    for path, name in (
        ("/activity/", "activity"),
        ("/graph/?q=dana", "graph"),
        ("/rules/", "rules"),
        ("/policies/", "policies"),
    ):
        page.goto(path)
        page.wait_for_selector("h1")
        assert fits_the_screen(page), path
        ui.screenshot(page, f"{name}-phone")
