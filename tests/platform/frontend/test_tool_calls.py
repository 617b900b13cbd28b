"""Tool calls in the dashboard (issue 17): a run's calls in its page, and the review page
of an ``action`` request, where a reviewer approves, rejects or edits the proposed call.

Runs call the real Python tools of the tools suite through their planner; an approved call
is executed by a real Celery worker (in this process), exactly once."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.utils.html import escape

from agentflow.models import Agent, AgentSession, Run, ToolCall
from frontend import queries
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.tools.conftest import (  # noqa: F401 (autouse fixtures: the tools)
    REFUNDS,
    registered_tools,
    tool_settings,
)
from tests.platform.tools.test_run_tools import LOOKUP, REFUND, planned_agent, settle

pytestmark = pytest.mark.django_db(transaction=True)  # the run's worker must see the agent


@pytest.fixture(autouse=True)
def _no_refunds() -> None:
    REFUNDS.clear()


def paused(acme: Persona) -> tuple[str, HITLRequest, ToolCall]:
    """A run whose planner proposed `refund` (requires confirmation): it waits for a human."""
    run = settle(acme, planned_agent(acme, REFUND))
    assert run["status"] == "awaiting_review", run
    with tenant_scope(acme.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
        call = ToolCall.objects.get(run_id=run["id"])
    return run["id"], request, call


def refreshed(acme: Persona, obj: HITLRequest | ToolCall) -> None:
    with tenant_scope(acme.tenant.pk):
        obj.refresh_from_db()


def text(response: object) -> str:
    return bytes(response.content).decode()  # type: ignore[attr-defined]


def test_the_run_page_lists_its_tool_calls(
    acme: Persona, viewer: User_, celery_worker_app: object
) -> None:
    run = settle(acme, planned_agent(acme, LOOKUP))
    with tenant_scope(acme.tenant.pk):
        call = ToolCall.objects.get(run_id=run["id"])
    assert call.status == "ok"
    page = viewer.get(f"/runs/{run['id']}/")
    assert page.status_code == 200
    html = text(page)
    item = re.search(rf'<li class="panel" data-tool-call-id="{call.pk}".*?</li>', html, re.S)
    assert item is not None, html
    block = item.group(0)
    assert 'data-tool="lookup_order"' in block
    assert 'data-status="ok"' in block
    assert f'data-field="step">{call.step}<' in block
    assert "not needed" in block  # no approval for a read-only tool
    # Arguments and result as labelled, indented JSON (redacted as stored: no e-mail).
    arguments = re.search(r'data-field="arguments">(.*?)</pre>', block, re.S)
    result = re.search(r'data-field="result">(.*?)</pre>', block, re.S)
    assert arguments is not None
    assert result is not None
    assert escape(json.dumps(call.arguments, indent=2, sort_keys=True)) == arguments.group(1)
    assert "jane@example.com" not in block
    assert "shipped" in result.group(1)
    assert "tool-calls-empty" not in html


def test_a_run_without_tool_calls_says_so(acme: Persona, agent: Agent, viewer: User_) -> None:
    with tenant_scope(acme.tenant.pk):
        session = AgentSession.objects.create(agent=agent, user_id="customer-1")
        run = Run.objects.create(agent=agent, session=session, user_id="customer-1", input="Hi")
    html = text(viewer.get(f"/runs/{run.pk}/"))
    assert 'data-testid="tool-calls-empty"' in html
    assert 'data-testid="tool-calls"' not in html


def test_a_call_awaiting_approval_links_its_review(
    acme: Persona, viewer: User_, celery_worker_app: object
) -> None:
    run_id, request, _call = paused(acme)
    html = text(viewer.get(f"/runs/{run_id}/"))
    assert 'data-status="awaiting_approval"' in html
    assert f'<a href="/hitl/{request.pk}/" data-request-link="{request.pk}">awaiting' in html
    assert "the call waits for approval" in html


def test_the_review_page_shows_the_proposed_call(
    acme: Persona, viewer: User_, reviewer: User_, celery_worker_app: object
) -> None:
    _run_id, request, call = paused(acme)
    html = text(reviewer.get(f"/hitl/{request.pk}/"))
    assert f'data-tool-call-id="{call.pk}"' in html
    assert 'data-field="tool">refund<' in html
    assert 'data-level="requires_confirmation"' in html
    assert "Refund an order." in html
    shown = re.search(r'data-testid="proposed-arguments">(.*?)</pre>', html, re.S)
    assert shown is not None
    assert json.loads(shown.group(1).replace("&quot;", '"')) == {
        "order_id": "A-42",
        "amount": 120.5,
    }
    assert 'data-schema-field="order_id"' in html
    assert 'data-schema-field="amount"' in html
    # The edit form holds the arguments, ready to change; no draft-answer form.
    assert 'name="arguments"' in html
    assert 'name="response"' not in html
    assert 'data-action="approve"' in html
    assert 'data-action="reject"' in html
    # A viewer sees the call but not the decision buttons.
    seen = text(viewer.get(f"/hitl/{request.pk}/"))
    assert 'data-field="tool">refund<' in seen
    assert 'data-action="approve"' not in seen


def test_invalid_edits_show_the_field_and_change_nothing(
    acme: Persona, reviewer: User_, celery_worker_app: object
) -> None:
    _run_id, request, call = paused(acme)
    path = f"/hitl/{request.pk}/"
    bad_schema = reviewer.post(
        path, {"action": "edit", "arguments": '{"order_id": "A-42", "amount": "lots"}'}
    )
    assert bad_schema.status_code == 422
    html = text(bad_schema)
    assert 'data-field-error="arguments"' in html
    assert "arguments.amount" in html
    assert "lots" in html  # the reviewer's text stays in the field, to fix
    not_json = reviewer.post(path, {"action": "edit", "arguments": '{"order_id": "A-42",'})
    assert not_json.status_code == 422
    assert "Not valid JSON" in text(not_json)
    not_object = reviewer.post(path, {"action": "edit", "arguments": "[1, 2]"})
    assert not_object.status_code == 422
    assert "must be a JSON object" in text(not_object)
    refreshed(acme, request)
    refreshed(acme, call)
    assert request.status == "pending"
    assert request.decision == ""
    assert call.status == "awaiting_approval"
    assert call.pending_arguments == {"order_id": "A-42", "amount": 120.5}
    assert REFUNDS == []


def wait_for_call(acme: Persona, call: ToolCall) -> ToolCall:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refreshed(acme, call)
        if call.status in ("ok", "error"):
            return call
        time.sleep(0.1)
    pytest.fail(f"the call stayed {call.status}")


def test_approve_decides_and_runs_the_call_once(
    acme: Persona, reviewer: User_, celery_worker_app: object
) -> None:
    _run_id, request, call = paused(acme)
    path = f"/hitl/{request.pk}/"
    response = reviewer.post(path, {"action": "approve"})
    assert response.status_code == 302
    assert response["Location"] == path
    assert wait_for_call(acme, call).status == "ok"
    refreshed(acme, request)
    assert request.decision == "approve"
    assert request.decided_by_id == reviewer.user.pk
    assert REFUNDS == [("A-42", 120.5)]
    # A second approval is refused (409 page): nothing runs again.
    assert reviewer.post(path, {"action": "approve"}).status_code == 409
    time.sleep(0.5)
    assert REFUNDS == [("A-42", 120.5)]


def test_edit_runs_the_call_with_the_new_arguments(
    acme: Persona, reviewer: User_, celery_worker_app: object
) -> None:
    _run_id, request, call = paused(acme)
    edited = '{"order_id": "A-42", "amount": 60}'
    response = reviewer.post(f"/hitl/{request.pk}/", {"action": "edit", "arguments": edited})
    assert response.status_code == 302
    assert wait_for_call(acme, call).status == "ok"
    assert REFUNDS == [("A-42", 60)]
    refreshed(acme, request)
    assert request.decision == "edit"


def test_reject_needs_a_reason_and_runs_nothing(
    acme: Persona, reviewer: User_, celery_worker_app: object
) -> None:
    _run_id, request, call = paused(acme)
    path = f"/hitl/{request.pk}/"
    assert reviewer.post(path, {"action": "reject", "reason": " "}).status_code == 422
    refreshed(acme, request)
    assert request.status == "pending"
    assert reviewer.post(path, {"action": "reject", "reason": "Too much."}).status_code == 302
    refreshed(acme, request)
    refreshed(acme, call)
    assert request.decision == "reject"
    assert call.status == "rejected"
    assert REFUNDS == []


def test_a_viewer_cannot_decide_and_another_tenant_gets_404(
    acme: Persona, globex: Persona, viewer: User_, celery_worker_app: object
) -> None:
    run_id, request, call = paused(acme)
    path = f"/hitl/{request.pk}/"
    assert viewer.post(path, {"action": "approve"}).status_code == 403
    stranger = member(globex.tenant, "gina", "owner")
    assert stranger.get(path).status_code == 404
    assert stranger.post(path, {"action": "approve"}).status_code == 404
    assert stranger.get(f"/runs/{run_id}/").status_code == 404
    refreshed(acme, request)
    refreshed(acme, call)
    assert request.status == "pending"
    assert call.status == "awaiting_approval"
    assert REFUNDS == []


def test_a_long_result_is_shown_bounded_and_says_so() -> None:
    text_ = queries.pretty_json({"body": "x" * 10_000})
    assert len(text_) < queries.TOOL_JSON_CHARS + 100
    assert text_.endswith("more characters)")
    assert "truncated" in text_


def test_schema_fields_read_the_top_level_properties() -> None:
    schema = {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "description": "The order."},
            "amount": {"type": ["number", "null"]},
        },
        "required": ["order_id"],
    }
    assert queries.schema_fields(schema) == [
        {"name": "order_id", "type": "string", "required": True, "description": "The order."},
        {"name": "amount", "type": "number | null", "required": False, "description": ""},
    ]
    assert queries.schema_fields({"type": "object"}) == []
