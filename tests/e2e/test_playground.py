"""The playground on an agent's page in headless Chromium: an operator types a message and
sees the answer, its intent and confidence, the sources and the planner's path."""

from __future__ import annotations

import pytest

from agentflow.models import Run
from tenants.context import tenant_scope
from tests.e2e.conftest import UI
from tests.e2e.test_dashboard import live, member
from tests.e2e.test_dashboard_phone import PHONE, fits_the_screen
from tests.platform.api.conftest import make_agent, make_persona
from tests.platform.frontend.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_tries_an_agent_in_its_playground(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    member(acme.tenant, "otto", "operator")
    page = live(ui.login("otto", PASSWORD, f"/agents/{agent.pk}/"))
    assert page.is_visible("[data-testid=playground-empty]")

    page.fill("#id_message", "How do I reset my password?")
    page.press("#id_message", "Control+Enter")  # sends, as the hint in the README says
    page.wait_for_selector("[data-testid=playground-answer]")
    with tenant_scope(acme.tenant.pk):
        run = Run.objects.get(agent=agent, metadata__playground=True)
    assert run.result is not None
    assert run.user_id == "playground:otto"
    assert page.get_attribute("[data-testid=playground-run]", "data-run-id") == str(run.pk)
    answer = page.text_content("[data-testid=playground-answer]")
    assert answer is not None
    assert answer.strip() == run.result["content"].strip()
    assert page.text_content("[data-testid=playground-intent]") == run.result["intent"]
    nodes = page.eval_on_selector_all(
        "[data-testid=playground-run] [data-plan-node]",
        "items => items.map((item) => item.dataset.planNode)",
    )
    assert nodes == [step["node"] for step in run.result["plan_path"]]
    titles = page.text_content("[data-testid=playground-sources]") or ""
    for source in run.result["sources"]:
        assert source["title"] in titles
    page.locator("#playground").scroll_into_view_if_needed()
    ui.screenshot(page, "playground")

    page.set_viewport_size(PHONE)
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right"
        " > window.innerWidth + 1).slice(0, 8).map((e) => e.tagName + '.' + e.className + '#'"
        " + (e.id || '') + ' ' + (e.getAttribute('data-testid') || ''))"
    )
    assert fits_the_screen(page), wide
    page.locator("#playground").scroll_into_view_if_needed()
    ui.screenshot(page, "playground-phone")
