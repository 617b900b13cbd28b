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
from typing import Any

from django.db import transaction
from django.db.models import F

from agentflow import tooling
from agentflow.blueprints import knowledge_publishing
from agentflow.core import queueing
from agentflow.core.api.exceptions import ContractError, unprocessable
from agentflow.models import Run, RunStatus
from agentflow.services import Delivered, finish_review
from hitl import services as hitl
from hitl import sla
from hitl.models import Decision, HITLRequest, Kind
from hitl.services import Reviewer
from learning import golden_paths
from learning import loop as learning_loop
from learning import services as learning
from learning.tasks import record_review_outcome_task
from tenants.context import tenant_scope

__all__ = [
    "decide_review",
    "execute_approved_tool_call",
    "expire_overdue_reviews",
    "recover_tool_calls",
]


def decide_review(
    *,
    reviewer: Reviewer,
    request: HITLRequest,
    decision: str,
    response: str | None = None,
    reason: str = "",
    arguments: dict[str, Any] | None = None,
) -> HITLRequest:
    """Approve, edit or reject a review request; its run resumes exactly once.

    A request of kind ``action`` (a proposed tool call) goes to `_decide_action` instead.

    1. HITL refuses what may not be decided (403, 422), then takes the decision by
       compare-and-set under the tenant's assignment lock (409 when someone else won);
    2. the run resumes with the outcome (``agentflow.services.finish_review``); a run that
       no longer waits (cancelled) is a 409 and rolls the decision back;
    3. the decision's history, audit and live event (HITL), then its activity events
       (learning: ``run.completed``, ``hitl.decided``) are recorded, all in one transaction;
    4. learning from it (embedding, golden path) is scheduled for after the commit.
    """
    if request.kind == Kind.ACTION:
        return _decide_action(
            reviewer=reviewer,
            request=request,
            decision=decision,
            reason=reason,
            arguments=arguments,
        )
    if arguments is not None:
        raise unprocessable(
            "Only an action request's edit carries arguments.",
            {"arguments": ["This request is about an answer: edit its response."]},
        )
    with tenant_scope(request.tenant_id):  # callers outside a request (tasks, tests) too
        hitl.check_decision(
            reviewer=reviewer, request=request, decision=decision, response=response
        )
    # An approved knowledge draft's article, embedded before the transaction (issue 18).
    article = knowledge_publishing.prepare_publication(request, decision, response)
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
        if article is not None:  # stored once: only the decision that won gets here (before
            # the audit appends below: its quota check locks the tenant row, which goes first)
            knowledge_publishing.publish(article, actor=reviewer.actor, tenant_id=decided.tenant_id)
        delivery = hitl.review_delivery(decided, decision, reason=reason)
        delivered = finish_review(actor=reviewer.actor, **delivery)
        if not delivered:
            raise hitl.run_not_waiting(decided)  # rolls the decision back: nothing changed
        hitl.record_decision(decided, reviewer=reviewer, response=response, reason=reason, now=now)
        # A run whose plan goes on settles later, in its worker (which records it).
        _record_activity(decided, resumed=delivered == Delivered.COMPLETED)
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
    return bool(finish_review(actor=hitl.SYSTEM, **delivery))


def _after_expiry(expired: HITLRequest, resumed: bool) -> None:
    # A rejection its plan goes on from (the run is back in the queue) has not settled yet.
    completed = Run.objects.filter(pk=expired.run_id, status=RunStatus.COMPLETED).exists()
    _record_activity(expired, resumed=resumed and completed)
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


# --- approved tool calls (issue 17) -----------------------------------------------------

EXECUTE_TOOL_CALL_TASK = "agentflow.runs.execute_tool_call"


def _action_refusal(exc: tooling.ToolInvocationError) -> ContractError:
    if isinstance(exc, tooling.ToolArgumentsInvalid):
        return unprocessable(f"The edited arguments are invalid: {exc}", exc.fields)
    return ContractError(str(exc), status_code=403, error_type="permission_denied")


def _decide_action(
    *,
    reviewer: Reviewer,
    request: HITLRequest,
    decision: str,
    reason: str,
    arguments: dict[str, Any] | None,
) -> HITLRequest:
    """A proposed tool call: approve or edit claims it once and queues its execution (the
    run settles when it ran); reject settles the run with the hand-off and the reason."""
    action = request.context.get("action") or {}
    approver_role = reviewer.role or tooling.API_KEY_ROLE
    with tenant_scope(request.tenant_id):
        hitl.check_decision(reviewer=reviewer, request=request, decision=decision, response=None)
    try:
        tooling.check_action_decision(action, decision, arguments, approver_role)
    except tooling.ToolInvocationError as exc:
        raise _action_refusal(exc) from exc
    now = datetime.now(UTC)
    with tenant_scope(request.tenant_id), transaction.atomic():
        decided = hitl.take_decision(
            reviewer=reviewer,
            request=request,
            decision=decision,
            response=None,
            reason=reason,
            now=now,
        )
        call = tooling.claim_approval(
            action.get("tool_call_id"),
            approve=decision != Decision.REJECT,
            arguments=arguments,
            approver_role=approver_role,
        )
        if call is None:
            raise hitl.run_not_waiting(decided)  # rolls the decision back: nothing changed
        if decision == Decision.REJECT:
            # The run ends with the hand-off, or its plan takes its rejection branch.
            delivery = hitl.review_delivery(decided, decision, reason=reason)
            if not finish_review(actor=reviewer.actor, **delivery, tool_call=call):
                raise hitl.run_not_waiting(decided)
        else:
            tenant_id, call_id = call.tenant_id, str(call.pk)
            transaction.on_commit(
                lambda: queueing.send(EXECUTE_TOOL_CALL_TASK, tenant_id, call_id), robust=True
            )
        hitl.record_decision(decided, reviewer=reviewer, response=None, reason=reason, now=now)
        learning.record_review_decided(decided)
    return decided


def execute_approved_tool_call(call_id: str) -> str:
    """Run an approved call once, then settle its run with the outcome (the task)."""
    call = tooling.execute_approved(call_id)
    if call is None:
        return "not_approved"  # executed already, rejected, or another worker has it
    if call.run_id is not None and call.approval_id is not None:
        _settle_after_action(call)
    return call.status


def _settle_after_action(call: Any) -> None:
    """The run completes with the call's outcome in its result (or its plan goes on with
    it); the call's price joins the run's."""
    request = HITLRequest.objects.filter(pk=call.approval_id).first()
    review = {
        "request_id": str(call.approval_id),
        "decision": request.decision if request else "approve",
        "status": request.status if request else "approved",
        "reason": None,
        "reviewer_id": request.decided_by_id if request else None,
        "tool_call": {"id": str(call.pk), "tool": call.tool, "status": call.status},
    }
    with transaction.atomic():
        Run.objects.filter(pk=call.run_id).update(cost_usd=F("cost_usd") + call.cost_usd)
        delivered = finish_review(
            actor=hitl.SYSTEM, run_id=call.run_id, review=review, content=None, tool_call=call
        )
        if delivered == Delivered.COMPLETED:
            learning.record_run_settled(
                call.run_id,
                RunStatus.COMPLETED,
                from_status=RunStatus.AWAITING_REVIEW,
                reason=f"action: {call.status}",
            )


def recover_tool_calls(now: datetime | None = None) -> int:
    """Beat: re-send approved calls no worker took; settle calls whose worker died while the
    tool ran, without running them again. Returns how many were re-sent."""
    now = now or datetime.now(UTC)
    approved, stale = tooling.lost_approved_calls(now)
    resent = sum(
        queueing.send(EXECUTE_TOOL_CALL_TASK, call.tenant_id, str(call.pk)) for call in approved
    )
    for call in stale:
        with tenant_scope(call.tenant_id):
            if tooling.abandon_call(call) and call.run_id is not None:
                call.refresh_from_db()
                _settle_after_action(call)
    return resent
