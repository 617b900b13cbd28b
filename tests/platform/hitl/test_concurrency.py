"""Claims and decisions under real concurrency: threads with their own connections, released
together by a barrier, against real PostgreSQL (ARCHITECTURE habit 4)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from agentflow import services as run_services
from agentflow.models import AgentSession, Message, Run, RunTransition
from governance.audit import Actor
from hitl import services as hitl_services
from hitl.models import HITLEvent, HITLRequest
from learning import services as learning_services
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.hitl.conftest import (
    LOW_CONFIDENCE,
    QUEUE,
    Member,
    audit_actions,
    escalated_run,
    make_member,
    review_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def concurrently(count: int, call: Callable[[int], Any]) -> list[Any]:
    """``call(index)`` from ``count`` threads released at once; each closes its connection."""
    barrier = threading.Barrier(count)

    def one(index: int) -> Any:
        try:
            barrier.wait(timeout=30)
            return call(index)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def _errors(responses: list[Any]) -> Counter[tuple[int, str]]:
    return Counter(
        (r.status_code, r.json().get("error_type", "")) for r in responses if r.status_code != 200
    )


def test_ten_reviewers_claiming_one_item_exactly_one_wins(owner: Persona, agent: Any) -> None:
    reviewers = [make_member(owner.tenant, f"reviewer{i}", "reviewer") for i in range(10)]
    request = review_of(escalated_run(agent))
    assert request.status == "pending"

    responses = concurrently(10, lambda i: reviewers[i].claim(request.pk))

    winners = [i for i, r in enumerate(responses) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert _errors(responses) == {(409, "claimed_by_another"): 9}
    request.refresh_from_db()
    assert request.status == "assigned"
    assert request.assignee_id == reviewers[winners[0]].user.pk
    assert HITLEvent.unscoped.filter(request=request, action="claimed").count() == 1
    assert audit_actions(owner.tenant)["hitl.claimed"] == 1
    # The losers cannot decide it either.
    loser = reviewers[(winners[0] + 1) % 10]
    assert loser.respond(request.pk, decision="approve").json()["error_type"] == (
        "claimed_by_another"
    )


def test_ten_concurrent_approvals_resume_the_run_once_with_one_message(
    owner: Persona, agent: Any
) -> None:
    """Five reviewers, each posting approve twice from two browser tabs, all at once."""
    reviewers = [make_member(owner.tenant, f"twin{i}", "reviewer") for i in range(5)]
    tabs: list[Member] = []
    for member in reviewers:
        second = Client(raise_request_exception=False)
        second.force_login(member.user)
        tabs += [member, Member(member.user, member.role, member.tenant, second)]
    run = escalated_run(agent)
    request = review_of(run)
    signalled: list[str] = []
    record = learning_services.record_review_decided

    def receiver(request: HITLRequest) -> None:  # called by the orchestrator, once
        signalled.append(request.decision)
        record(request)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(learning_services, "record_review_decided", receiver)
        responses = concurrently(10, lambda i: tabs[i].respond(request.pk, decision="approve"))

    assert sum(r.status_code == 200 for r in responses) == 1, [r.status_code for r in responses]
    errors = _errors(responses)
    assert set(errors) <= {(409, "already_decided"), (409, "claimed_by_another")}, errors
    assert signalled == ["approve"]
    with tenant_scope(owner.tenant.pk):
        run.refresh_from_db()
        answers = Message.objects.filter(run=run, role="assistant").count()
        completions = RunTransition.objects.filter(run=run, to_status="completed").count()
    assert run.status == "completed"
    assert answers == 1
    assert completions == 1
    actions = audit_actions(owner.tenant)
    assert actions["run.completed"] == 1
    assert actions["hitl.approved"] == 1


def test_two_workers_resuming_one_run_complete_it_once(owner: Persona, agent: Any) -> None:
    """The resume step itself, run by two workers at once (say a redelivered task)."""
    run = escalated_run(agent)

    def resume(_: int) -> bool:
        with tenant_scope(owner.tenant.pk):
            delivered = run_services.finish_review(
                actor=Actor.system("worker"),
                run_id=run.pk,
                review={"decision": "approve"},
                content="The approved answer.",
            )
            return bool(delivered)

    outcomes = concurrently(2, resume)

    assert sorted(outcomes) == [False, True]
    with tenant_scope(owner.tenant.pk):
        assert Message.objects.filter(run=run, role="assistant").count() == 1
        assert RunTransition.objects.filter(run=run, to_status="completed").count() == 1


def test_a_claim_racing_a_decision_never_takes_a_decided_item(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    others = [make_member(owner.tenant, f"late{i}", "reviewer") for i in range(4)]
    request = review_of(escalated_run(agent))

    def act(i: int) -> Any:
        if i == 0:
            return reviewer.respond(request.pk, decision="approve")
        return others[i - 1].claim(request.pk)

    responses = concurrently(5, act)

    request.refresh_from_db()
    if responses[0].status_code == 200:
        assert request.status == "approved"
        assert all(r.status_code == 409 for r in responses[1:])
    else:  # a claim won first: the decision was refused and one claimer holds it
        assert request.status == "assigned"
        assert sum(r.status_code == 200 for r in responses[1:]) == 1
    assert HITLRequest.unscoped.filter(run_id=request.run_id).count() == 1
    listed = reviewer.get(QUEUE, status="all").json()
    assert listed["total"] == 1


def test_escalations_at_once_fill_reviewers_up_to_their_capacity_only(
    owner: Persona, agent: Any
) -> None:
    """New requests take no tenant-wide turn (issue 15); a reviewer's capacity still holds:
    the reviewer's row is locked and the load re-counted when a request is assigned."""
    ann, bob = (make_member(owner.tenant, name, "reviewer") for name in ("ann", "bob"))
    for member, capacity in ((ann, 2), (bob, 1)):
        hitl_services.set_availability(
            actor=Actor.system("test"),
            tenant_id=owner.tenant.pk,
            user_id=member.user.pk,
            available=True,
            capacity=capacity,
        )
    with tenant_scope(owner.tenant.pk):
        runs = []
        for i in range(6):
            session = AgentSession.objects.create(agent=agent, user_id=f"customer-{i}")
            runs.append(
                Run.objects.create(
                    agent=agent, session=session, user_id=session.user_id, input=LOW_CONFIDENCE
                )
            )

    def execute(i: int) -> str:
        with tenant_scope(owner.tenant.pk):
            return run_services.execute_run(str(runs[i].pk))

    assert concurrently(6, execute) == ["awaiting_review"] * 6
    requests = HITLRequest.unscoped.filter(run__in=runs)
    held = Counter(requests.filter(status="assigned").values_list("assignee_id", flat=True))
    assert held == {ann.user.pk: 2, bob.user.pk: 1}
    assert requests.filter(status="pending", assignee__isnull=True).count() == 3
    assert HITLEvent.unscoped.filter(request__in=requests, action="assigned").count() == 3
