"""A reviewer decides a proposed tool call in headless Chromium (issue 17): the review page
shows the call, refuses arguments its schema refuses (naming the field), and an edit with
valid arguments runs the call once, which the run's page then lists."""

from __future__ import annotations

import json
import time

import pytest

from agentflow.models import ToolCall
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.e2e.conftest import UI
from tests.e2e.test_dashboard import member
from tests.platform.api.conftest import make_persona
from tests.platform.frontend.conftest import PASSWORD
from tests.platform.tools.conftest import (  # noqa: F401 (autouse fixtures: the tools)
    REFUNDS,
    registered_tools,
    tool_settings,
)
from tests.platform.tools.test_run_tools import REFUND, planned_agent, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reviewer_edits_a_proposed_call_and_it_runs_once(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    REFUNDS.clear()
    acme = make_persona("Acme", tier="professional")
    member(acme.tenant, "rita", "reviewer")
    run = settle(acme, planned_agent(acme, REFUND))
    assert run["status"] == "awaiting_review", run
    with tenant_scope(acme.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
        call = ToolCall.objects.get(run_id=run["id"])

    page = ui.login("rita", PASSWORD, f"/hitl/{request.pk}/")
    page.wait_for_selector("[data-testid=proposed-call]")
    assert page.text_content("[data-testid=proposed-call] [data-field=tool]").strip() == "refund"
    shown = json.loads(page.text_content("[data-testid=proposed-arguments]"))
    assert shown == {"order_id": "A-42", "amount": 120.5}
    assert json.loads(page.input_value("textarea[name=arguments]")) == shown

    page.fill("textarea[name=arguments]", '{"order_id": "A-42", "amount": "lots"}')
    page.click("[data-action=edit]")
    page.wait_for_selector("[data-field-error=arguments]")
    assert "arguments.amount" in page.text_content("[data-field-error=arguments]")
    assert REFUNDS == []

    page.fill("textarea[name=arguments]", '{"order_id": "A-42", "amount": 60}')
    page.click("[data-action=edit]")
    page.wait_for_selector("[data-testid=actions]", state="detached")
    deadline = time.monotonic() + 30
    while call.status != "ok" and time.monotonic() < deadline:
        time.sleep(0.1)
        with tenant_scope(acme.tenant.pk):
            call.refresh_from_db()
    assert call.status == "ok"
    assert REFUNDS == [("A-42", 60)]

    page.goto(f"/runs/{run['id']}/")
    item = f'[data-tool-call-id="{call.pk}"]'
    page.wait_for_selector(item)
    assert page.get_attribute(f"{item} [data-field=status]", "data-status") == "ok"
    assert "refunded 60 on A-42" in page.text_content(f"{item} [data-field=result]")
