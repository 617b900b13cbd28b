"""Bad input to the queue (SPEC 14): a clear error naming what is wrong, and nothing changed.

Each test asserts the error body and that the tenant's rows, audit chain and runs are
exactly as before (``nothing_written``, shared with the API contract tests).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, assert_field_errors, nothing_written
from tests.platform.hitl.conftest import QUEUE, Member, escalated_run, make_member, review_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def request_id(agent: Any) -> str:
    return str(review_of(escalated_run(agent)).pk)


def test_deciding_an_already_decided_request_is_409(
    owner: Persona, reviewer: Member, request_id: str
) -> None:
    assert reviewer.respond(request_id, decision="approve").status_code == 200
    with nothing_written(owner.tenant):
        for body in (
            {"decision": "approve"},
            {"decision": "edit", "response": "Changed my mind."},
            {"decision": "reject", "reason": "too late"},
        ):
            body_ = assert_error(reviewer.respond(request_id, **body), 409, "already_decided")
            assert body_["status"] == "approved"
        assert_error(reviewer.claim(request_id), 409, "already_decided")
        assert_error(reviewer.post(f"{QUEUE}/{request_id}/unclaim"), 409, "already_decided")


def test_a_foreign_request_is_404_for_a_signed_in_reviewer(
    owner: Persona, outsider: Persona, request_id: str
) -> None:
    """The other tenant's reviewer, over the dashboard session (the key case is in
    tests/platform/api/test_outsiders.py): 404 exactly like a missing id."""
    stranger = make_member(outsider.tenant, "stranger", "owner")
    with nothing_written(owner.tenant):
        for response in (
            stranger.claim(request_id),
            stranger.respond(request_id, decision="approve"),
            stranger.post(f"{QUEUE}/{request_id}/unclaim"),
            stranger.get(f"{QUEUE}/{request_id}"),
            stranger.get(f"{QUEUE}/{request_id}/history"),
        ):
            assert assert_error(response, 404, "not_found")["detail"] == "Not found."
            assert request_id not in response.content.decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"decision": "edit"}, "response"),
        ({"decision": "edit", "response": ""}, "response"),
        ({"decision": "edit", "response": "   \n\t "}, "response"),
        ({"decision": "approve", "response": "sneaked in"}, "response"),
        ({"decision": "reject"}, "reason"),
        ({"decision": "reject", "reason": "  "}, "reason"),
        ({"decision": "approved"}, "decision"),
        ({"decision": 1}, "decision"),
        ({}, "decision"),
        ({"decision": "approve", "assignee": 1}, "assignee"),
        ({"decision": "edit", "response": "x" * 20_001}, "response"),
        ({"decision": "edit", "response": "nul \x00 byte"}, "response"),
    ],
    ids=[
        "edit-without-text",
        "edit-empty",
        "edit-blank",
        "approve-with-text",
        "reject-without-reason",
        "reject-blank-reason",
        "unknown-decision",
        "decision-not-a-string",
        "missing-decision",
        "unknown-field",
        "edit-too-long",
        "edit-with-nul",
    ],
)
def test_bad_decisions_are_422_naming_the_field(
    owner: Persona, reviewer: Member, request_id: str, body: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = reviewer.post(f"{QUEUE}/{request_id}/respond", body)
        assert_field_errors(response, field)


def test_approving_without_a_proposed_answer_is_422(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    request = review_of(escalated_run(agent, "I was charged twice"))
    request.proposed_answer = ""
    type(request).unscoped.filter(pk=request.pk).update(proposed_answer="")
    with nothing_written(owner.tenant):
        body = assert_error(reviewer.respond(request.pk, decision="approve"), 422)
        assert (body["error_type"], body["reason"]) == ("nothing_to_approve", "empty")
        assert body["errors"]["decision"]


@pytest.mark.parametrize("priority", ["urgent", "CRITICAL", "", 3, None])
def test_invalid_priorities_are_422(
    owner: Persona, agent: Any, request_id: str, priority: Any
) -> None:
    run_id = review_of_run(request_id)
    with nothing_written(owner.tenant):
        response = owner.post(
            f"/api/v1/hitl/escalate/{run_id}", {"reason": "look", "priority": priority}
        )
        assert_field_errors(response, "priority")


def review_of_run(request_id: str) -> str:
    from hitl.models import HITLRequest

    return str(HITLRequest.unscoped.get(pk=request_id).run_id)


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "reason"), ({"reason": ""}, "reason"), ({"reason": "x", "urgency": 1}, "urgency")],
    ids=["missing-reason", "empty-reason", "unknown-field"],
)
def test_bad_escalations_are_422(
    owner: Persona, request_id: str, body: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = owner.post(f"/api/v1/hitl/escalate/{review_of_run(request_id)}", body)
        assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=open,nope", "status"),
        ("priority=normal", "priority"),
        ("priority=urgent", "priority"),
        ("kind=robot", "kind"),
        ("assignee=someone", "assignee"),
        ("assignee=-1", "assignee"),
        ("breached=yes", "breached"),
        ("sort_by=question", "sort_by"),
        ("sort_order=up", "sort_order"),
        ("limit=0", "limit"),
        ("offset=-1", "offset"),
    ],
)
def test_bad_queue_filters_are_422(owner: Persona, request_id: str, query: str, field: str) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(owner.get(f"{QUEUE}?{query}"), field)


@pytest.mark.parametrize("query", ["days=0", "days=91", "days=x", "days=-3"])
def test_bad_stats_windows_are_422(owner: Persona, query: str) -> None:
    assert_field_errors(owner.get(f"/api/v1/hitl/stats?{query}"), "days")


def test_an_api_key_asking_for_its_own_assignments_is_422(owner: Persona) -> None:
    assert_field_errors(owner.get(f"{QUEUE}?assignee=me"), "assignee")


def test_malformed_json_changes_nothing(owner: Persona, reviewer: Member, request_id: str) -> None:
    with nothing_written(owner.tenant):
        response = reviewer.client.post(
            f"{QUEUE}/{request_id}/respond",
            '{"decision": "approve"',
            content_type="application/json",
        )
        assert_error(response, 400, "malformed_request")
        response = reviewer.client.post(
            f"{QUEUE}/{request_id}/respond", "decision=approve", content_type="text/plain"
        )
        assert_error(response, 415, "unsupported_media_type")
