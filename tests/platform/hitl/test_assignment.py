"""Fair assignment: the least-loaded available member with the required role, within
capacity; unclaim hands the request to someone else; freed capacity pulls waiting work."""

from __future__ import annotations

from typing import Any

import pytest

from governance.audit import Actor
from hitl.models import HITLRequest
from hitl.services import set_availability
from tests.platform.api.conftest import Persona
from tests.platform.hitl.conftest import QUEUE, Member, escalated_run, make_member, review_of

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.system("tests")


def _available(member: Member, capacity: int | None = None, available: bool = True) -> None:
    set_availability(
        actor=ACTOR,
        tenant_id=member.tenant.pk,
        user_id=member.user.pk,
        available=available,
        capacity=capacity,
    )


def _held(member: Member) -> int:
    return HITLRequest.unscoped.filter(
        assignee=member.user, status__in=("pending", "assigned", "escalated")
    ).count()


def test_requests_go_to_the_least_loaded_available_reviewer(owner: Persona, agent: Any) -> None:
    ann, bob, cat = (make_member(owner.tenant, name, "reviewer") for name in ("ann", "bob", "cat"))
    viewer = make_member(owner.tenant, "vic", "viewer")
    _available(ann)
    _available(bob)
    # cat is away; a viewer cannot review at all, available or not.
    with pytest.raises(ValueError, match="only reviewers"):
        _available(viewer)

    requests = [review_of(escalated_run(agent)) for _ in range(4)]

    assert {r.assignee_id for r in requests} == {ann.user.pk, bob.user.pk}
    assert (_held(ann), _held(bob), _held(cat)) == (2, 2, 0)
    assert all(r.status == "assigned" for r in requests)


def test_capacity_is_respected_and_freed_capacity_pulls_waiting_work(
    owner: Persona, agent: Any
) -> None:
    ann = make_member(owner.tenant, "ann", "reviewer")
    _available(ann, capacity=1)
    first = review_of(escalated_run(agent, priority="low"))
    waiting_low = review_of(escalated_run(agent, priority="low"))
    waiting_critical = review_of(escalated_run(agent, priority="critical"))
    assert first.assignee_id == ann.user.pk
    assert waiting_low.assignee_id is None
    assert waiting_critical.assignee_id is None

    assert ann.respond(first.pk, decision="approve").status_code == 200

    # The most urgent waiting request comes next, not the oldest.
    waiting_critical.refresh_from_db()
    waiting_low.refresh_from_db()
    assert waiting_critical.assignee_id == ann.user.pk
    assert waiting_low.assignee_id is None


def test_becoming_available_takes_waiting_requests_up_to_capacity(
    owner: Persona, agent: Any
) -> None:
    ann = make_member(owner.tenant, "ann", "reviewer")
    waiting = [review_of(escalated_run(agent)) for _ in range(3)]
    assert all(r.assignee_id is None for r in waiting)
    _available(ann, capacity=2)
    assert _held(ann) == 2
    _available(ann, available=False)
    assert _held(ann) == 2  # going away keeps what one holds


def test_escalated_requests_need_the_higher_role(owner: Persona, agent: Any) -> None:
    reviewer = make_member(owner.tenant, "rita", "reviewer")
    operator = make_member(owner.tenant, "otto", "operator")
    _available(reviewer)
    request = review_of(escalated_run(agent))
    HITLRequest.unscoped.filter(pk=request.pk).update(
        required_role="operator", escalation_level=1, status="escalated", assignee=None
    )
    assert reviewer.claim(request.pk).status_code == 403
    assert reviewer.respond(request.pk, decision="approve").status_code == 403
    assert operator.claim(request.pk).status_code == 200


def test_unclaim_hands_the_request_to_another_reviewer(owner: Persona, agent: Any) -> None:
    ann, bob = (
        make_member(owner.tenant, "ann", "reviewer"),
        make_member(owner.tenant, "bob", "reviewer"),
    )
    _available(ann)
    request = review_of(escalated_run(agent))
    assert request.assignee_id == ann.user.pk
    _available(bob)

    released = ann.post(f"{QUEUE}/{request.pk}/unclaim", {"reason": "leaving for the day"})

    assert released.status_code == 200, released.json()
    assert released.json()["assignee"]["username"] == "bob"
    history = ann.get(f"{QUEUE}/{request.pk}/history").json()["results"]
    assert [e["action"] for e in history] == ["queued", "assigned", "unclaimed", "assigned"]
    assert history[2]["detail"] == {
        "previous_assignee_id": ann.user.pk,
        "reason": "leaving for the day",
    }


def test_only_the_assignee_or_an_operator_may_unclaim(owner: Persona, agent: Any) -> None:
    ann, bob = (
        make_member(owner.tenant, "ann", "reviewer"),
        make_member(owner.tenant, "bob", "reviewer"),
    )
    operator = make_member(owner.tenant, "otto", "operator")
    request = review_of(escalated_run(agent))
    assert ann.claim(request.pk).status_code == 200
    refused = bob.post(f"{QUEUE}/{request.pk}/unclaim")
    assert refused.status_code == 403
    request.refresh_from_db()
    assert request.assignee_id == ann.user.pk
    released = operator.post(f"{QUEUE}/{request.pk}/unclaim")
    assert released.status_code == 200
    assert released.json()["status"] == "pending"
    assert released.json()["assignee"] is None  # ann is excluded and nobody else is available
    again = operator.post(f"{QUEUE}/{request.pk}/unclaim")
    assert again.status_code == 409
    assert again.json()["error_type"] == "not_assigned"


def test_claiming_what_one_holds_is_idempotent(owner: Persona, agent: Any) -> None:
    ann = make_member(owner.tenant, "ann", "reviewer")
    request = review_of(escalated_run(agent))
    first, second = ann.claim(request.pk), ann.claim(request.pk)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json() == second.json()
    history = ann.get(f"{QUEUE}/{request.pk}/history").json()["results"]
    assert [e["action"] for e in history] == ["queued", "claimed"]


def test_equal_loads_go_to_the_reviewer_unassigned_longest(
    owner: Persona, outsider: Persona, agent: Any
) -> None:
    ann, bob = (make_member(owner.tenant, name, "reviewer") for name in ("ann", "bob"))
    # Another tenant's idle reviewer (least loaded of all) is never a candidate here.
    stranger = make_member(outsider.tenant, "sam", "reviewer")
    _available(stranger)
    _available(ann)
    _available(bob)

    assignees = [review_of(escalated_run(agent)).assignee_id for _ in range(4)]

    # Never assigned: the lower user id first; then the one whose last assignment is older.
    assert assignees == [ann.user.pk, bob.user.pk, ann.user.pk, bob.user.pk]
    assert _held(stranger) == 0
