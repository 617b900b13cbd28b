"""The review queue at phone width, and the reviewer's keyboard, in headless Chromium.

A reviewer signs in (landing on the queue), sees an escalation arrive as a card that fits a
390 px screen, opens it, and decides it with the keys the README names.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from agentflow.models import Run
from hitl import services as hitl_services
from tests.e2e.conftest import UI
from tests.e2e.test_dashboard import ask, live, member, wait_text
from tests.platform.api.conftest import ACTOR, make_agent, make_persona
from tests.platform.frontend.conftest import PASSWORD
from tests.platform.hitl.conftest import LOW_CONFIDENCE, review_of

pytestmark = pytest.mark.django_db(transaction=True)
PHONE = {"width": 390, "height": 844}


def fits_the_screen(page: Any) -> bool:
    """Nothing sticks out sideways: the page cannot be scrolled horizontally."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_a_reviewer_works_the_queue_on_a_phone_with_the_keyboard(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    member(acme.tenant, "rita", "reviewer")
    page = ui.new_page()
    page.set_viewport_size(PHONE)
    page.goto("/login/")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/hitl/")  # reviewers land on their queue
    live(page)
    # Signing in made rita available (issue 19); away, the request waits for her `c`.
    rita = User.objects.get(username="rita")
    hitl_services.set_availability(
        actor=ACTOR, tenant_id=acme.tenant.pk, user_id=rita.pk, available=False
    )

    run_id = ask(live_url, acme.key, agent.pk, LOW_CONFIDENCE, wait=False)["id"]
    row = f'tr[data-run-id="{run_id}"]'
    page.wait_for_selector(row)
    wait_text(page, f"{row} [data-field=status]", "pending")
    assert fits_the_screen(page)
    for cell in ("a[data-field=link]", "[data-field=status]", "[data-field=deadline]"):
        box = page.locator(f"{row} {cell}").bounding_box()
        assert box is not None, cell
        assert box["x"] >= 0, cell
        assert box["x"] + box["width"] <= PHONE["width"], cell
    labels = page.eval_on_selector(
        f"{row} td[data-label=SLA]", "td => getComputedStyle(td, '::before').content"
    )
    assert labels == '"SLA"'  # each card's cells say what they are
    ui.screenshot(page, "hitl-queue-phone")

    page.click(f"{row} a[data-field=link]")
    page.wait_for_selector("[data-testid=request-question]")
    assert fits_the_screen(page)
    page.keyboard.press("c")
    page.wait_for_selector("[data-action=claim]", state="detached")
    # Claiming submits a form: the shortcuts work once the next page's scripts have run
    # (under load the old page's detach came first and the next key press was lost).
    page.wait_for_selector("#id_reason")
    page.wait_for_load_state("load")
    # r opens the reason (nothing sent yet), r again once there is one rejects.
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "id_reason"
    assert page.is_visible("[data-testid=shortcut-hint]")
    page.keyboard.type("Not our product")
    page.keyboard.press("Escape")
    assert review_of_run(run_id) == "assigned"
    page.keyboard.press("r")
    page.wait_for_selector("[data-testid=actions]", state="detached")
    wait_text(page, "[data-testid=request-status]", "rejected")
    assert review_of_run(run_id) == "rejected"


def review_of_run(run_id: str) -> str:
    return str(review_of(Run.unscoped.get(pk=run_id)).status)
