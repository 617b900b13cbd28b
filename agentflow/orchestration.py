"""Run orchestration: what follows a review, as one call chain (ARCHITECTURE habits 2, 6).

A reviewer's decision touches three apps: HITL owns the request, the agents app the run,
learning the activity stream and golden paths. HITL and learning are independent of each
other (neither imports the other), so the service that calls all three lives here, in the
layer above them (``run orchestration`` in the ARCHITECTURE sketch), and every step is a
call you can read, top to bottom, in :func:`decide_review`. There are no signals on this
path.

What is slow or remote (embedding the question of a golden path) runs after the decision
commits, in the idempotent ``learning.record_review_outcome`` task: never inside the
decision's transaction, which holds the tenant-wide assignment lock every claim and
decision of the tenant waits for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction

from agentflow.core import queueing
from agentflow.models import RunStatus
from agentflow.services import finish_review
from hitl import services as hitl
from hitl import sla
from hitl.models import HITLRequest
from hitl.services import Reviewer
from learning import golden_paths
from learning import loop as learning_loop
from learning import services as learning
from learning.tasks import record_review_outcome_task
from tenants.context import tenant_scope

__all__ = ["decide_review", "expire_overdue_reviews"]


def decide_review(
    *,
    reviewer: Reviewer,
    request: HITLRequest,
    decision: str,
    response: str | None = None,
    reason: str = "",
) -> HITLRequest:
    """Approve, edit or reject a review request; its run resumes exactly once.

    1. HITL refuses what may not be decided (403, 422), then takes the decision by
       compare-and-set under the tenant's assignment lock (409 when someone else won);
    2. the run resumes with the outcome (``agentflow.services.finish_review``); a run that
       no longer waits (cancelled) is a 409 and rolls the decision back;
    3. the decision's history, audit and live event (HITL), then its activity events
       (learning: ``run.completed``, ``hitl.decided``) are recorded, all in one transaction;
    4. learning from it (embedding, golden path) is scheduled for after the commit.
    """
    with tenant_scope(request.tenant_id):  # callers outside a request (tasks, tests) too
        hitl.check_decision(
            reviewer=reviewer, request=request, decision=decision, response=response
        )
    now = datetime.now(UTC)
    with tenant_scope(request.tenant_id), transaction.atomic():
        decided = hitl.take_decision(
            reviewer=reviewer,
            request=request,
            decision=decision,
            response=response,
            reason=reason,
            now=now,
        )
        delivery = hitl.review_delivery(decided, decision, reason=reason)
        if not finish_review(actor=reviewer.actor, **delivery):
            raise hitl.run_not_waiting(decided)  # rolls the decision back: nothing changed
        hitl.record_decision(decided, reviewer=reviewer, response=response, reason=reason, now=now)
        _record_activity(decided, resumed=not delivery["after_the_fact"])
        _learn_after_commit(decided)
    return decided


def expire_overdue_reviews(now: datetime) -> sla.SweepReport:
    """The SLA sweep (beat): HITL escalates and auto-rejects what is overdue; an expiry
    resumes its run and is recorded like a decision, in the expiry's transaction."""
    return sla.sweep(now, deliver=deliver_expired_review, on_expired=_after_expiry)


def deliver_expired_review(expired: HITLRequest, decision: str, reason: str) -> bool:
    """Resume the run of a request its SLA expired (the system rejects it); False when the
    run no longer waits (it was cancelled). Inside the expiry's transaction."""
    delivery = hitl.review_delivery(expired, decision, reason=reason)
    return finish_review(actor=hitl.SYSTEM, **delivery)


def _after_expiry(expired: HITLRequest, resumed: bool) -> None:
    _record_activity(expired, resumed=resumed)
    _learn_after_commit(expired)  # a rejection teaches nothing today; the rule is learning's


def _record_activity(decided: HITLRequest, *, resumed: bool) -> None:
    """The activity stream's events of a decision, in its transaction (order as they
    happened: the run settled, then the request was decided)."""
    if resumed:
        learning.record_run_settled(
            decided.run_id,
            RunStatus.COMPLETED,
            from_status=RunStatus.AWAITING_REVIEW,
            reason=f"review: {decided.decision}",
        )
    learning.record_review_decided(decided)


def _learn_after_commit(decided: HITLRequest) -> None:
    """Enqueue the golden path of a decision once it commits (nothing when it rolls back)."""
    if not learning_loop.learns_from(decided):
        return
    tenant_id, request_id = decided.tenant_id, str(decided.pk)
    transaction.on_commit(
        lambda: queueing.send(record_review_outcome_task, tenant_id, request_id), robust=True
    )


# A decision's golden-path task is sent when the decision commits; the sweep looks for the
# ones that never arrived (the broker was down then) within this window.
LOST_OUTCOME_GRACE = timedelta(minutes=2)
LOST_OUTCOME_WINDOW = timedelta(hours=24)
LOST_OUTCOME_BATCH = 200


def resend_lost_review_outcomes(now: datetime) -> int:
    """Re-send the golden-path task of recent approvals and edits that no golden path records
    yet (the beat sweep; returns how many). The task is idempotent, so one that was merely
    late is recorded once all the same."""
    # Every tenant's decisions, knowingly: a platform sweep; each check enters its tenant.
    decided = (
        HITLRequest.unscoped.filter(
            decision__in=learning_loop.LEARNING_DECISIONS,
            decided_at__gte=now - LOST_OUTCOME_WINDOW,
            decided_at__lte=now - LOST_OUTCOME_GRACE,
        )
        .select_related("run")
        .order_by("-decided_at")[:LOST_OUTCOME_BATCH]
    )
    resent = 0
    for request in decided:
        if not learning_loop.learns_from(request):
            continue
        with tenant_scope(request.tenant_id):
            learnt = golden_paths.recorded_for_run(request.run.agent_id, str(request.run_id))
        if learnt is None:
            resent += queueing.send(record_review_outcome_task, request.tenant_id, str(request.pk))
    return resent
