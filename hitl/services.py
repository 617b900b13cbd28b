"""Every write of the review queue, and what other apps may call (ARCHITECTURE habits 2, 4, 6).

* :func:`request_review` queues a run the pipeline escalated (called by
  ``agentflow.services.complete_run`` in the run's own transaction) or one escalated by
  hand (:func:`escalate_run`), with its SLA deadline, policy and role, and assigns it to
  the least-loaded available reviewer.
* :func:`claim`, :func:`unclaim` and :func:`take_decision` are compare-and-set updates:
  any number of reviewers, requests or workers, one winner; the loser gets a 409 and
  nothing changes.
* Deciding is orchestrated by ``agentflow.orchestration.decide_review``, which calls this
  module's steps (:func:`check_decision`, :func:`take_decision`, :func:`review_delivery`,
  :func:`record_decision`) around the run's resumption and learning: HITL never imports
  learning, and the decision and the run's resumption commit together, so a run resumes
  exactly once.

Each write records history, audit and a live event (:mod:`hitl.events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from rest_framework import status as http

from agentflow import non_answers
from agentflow.core.api.exceptions import ContractError, conflict
from agentflow.core.conf import setting_int
from agentflow.models import Run, RunStatus
from governance.audit import Actor, append
from hitl import assignment, events, tasks
from hitl.models import (
    DECIDED_STATUSES,
    DECISION_STATUS,
    OPEN_STATUSES,
    PRIORITY_RANK,
    Decision,
    EscalationPolicy,
    HITLRequest,
    Kind,
    OnReject,
    Priority,
    ReviewerAvailability,
    Status,
)
from hitl.policy import (
    REVIEW_ROLES,
    ROLE_RANK,
    handoff_text,
    resolve_policy,
    review_config,
    sla_deadline,
)
from tenants.context import tenant_scope
from tenants.models import Membership, Role, Tenant

SYSTEM = Actor.system("hitl")
_KIND_OF_REASON = {
    "low_confidence": Kind.LOW_CONFIDENCE,
    "out_of_scope": Kind.LOW_CONFIDENCE,
    "always_escalate": Kind.ALWAYS_REVIEW,
}


@dataclass(frozen=True)
class Reviewer:
    """Who is acting on the queue: a member with a role, or an API key.

    Members review up to their role (reviewer < operator < owner; platform admins act as
    owners). A key with the ``write`` scope is the tenant's machine credential and may
    decide and release requests at any level, but cannot hold one: claims are a person's.
    """

    actor: Actor
    user_id: int | None = None
    role: str | None = None
    key_writes: bool = False

    @property
    def rank(self) -> int:
        if self.user_id is None:
            return max(ROLE_RANK.values()) if self.key_writes else 0
        return ROLE_RANK.get(self.role or "", 0)

    def may_review(self, required_role: str) -> bool:
        return self.rank >= ROLE_RANK[required_role]

    @property
    def manages_queue(self) -> bool:
        return self.rank >= ROLE_RANK[Role.OPERATOR]

    def reviewable_roles(self) -> list[str]:
        return [role for role, rank in ROLE_RANK.items() if rank <= self.rank]


def _forbidden(detail: str) -> ContractError:
    return ContractError(
        detail, status_code=http.HTTP_403_FORBIDDEN, error_type="permission_denied"
    )


def _require_reviewer(reviewer: Reviewer, request: HITLRequest) -> None:
    if request.status in DECIDED_STATUSES:  # say so before judging who asks
        raise _already_decided(request)
    if reviewer.rank == 0:
        raise _forbidden("Reviewing needs a reviewer, operator or owner (or a write key).")
    if not reviewer.may_review(request.required_role):
        raise _forbidden(f"This request needs the {request.required_role!r} role or higher.")


def _already_decided(request: HITLRequest) -> ContractError:
    return conflict(
        f"Request was already decided ({request.status}).",
        "already_decided",
        status=request.status,
    )


def kind_of(escalation_reason: str | None) -> str:
    return _KIND_OF_REASON.get(escalation_reason or "", Kind.POLICY)


# --- queueing ---------------------------------------------------------------------------


def request_review(
    *,
    run: Run,
    result: dict[str, Any],
    actor: Actor,
    kind: str | None = None,
    priority: str | None = None,
    reason: str | None = None,
    after_the_fact: bool = False,
    now: datetime | None = None,
) -> HITLRequest:
    """Queue ``run`` for review inside the caller's transaction; assign it if someone is free.

    ``result`` is the run's result (question context, proposed answer, intent, confidence,
    escalation reason, sources, thread). ``after_the_fact``: the run already settled, so
    the decision adds to its conversation instead of resuming it.
    """
    now = now or datetime.now(UTC)
    # No savepoint: every caller's transaction fails with it (escalate_run has its own).
    with tenant_scope(run.tenant_id), transaction.atomic(savepoint=False):
        entry = assignment.enter_queue(run.tenant_id, run.agent_id)
        kind = kind or kind_of(result.get("escalation_reason"))
        priority = priority or (run.priority if run.priority in PRIORITY_RANK else Priority.MEDIUM)
        intent = str(result.get("intent") or "")
        config = review_config(tier=entry.tier, agent_id=run.agent_id, settings=entry.settings)
        policy = resolve_policy(priority=priority, intent=intent, kind=kind, enabled=entry.policies)
        request = _create_request(
            run,
            result,
            policy,
            kind=kind,
            priority=priority,
            intent=intent,
            reason=reason,
            after_the_fact=after_the_fact,
            deadline=sla_deadline(config, priority, now),
            now=now,
        )
        # Inserted with its "queued" history entry: the queued request as stored.
        _announce_queued(request, policy, kind=kind, priority=priority, actor=actor, now=now)
        return assignment.auto_assign(request, actor=SYSTEM, now=now) or request


def _create_request(
    run: Run,
    result: dict[str, Any],
    policy: EscalationPolicy,
    *,
    kind: str,
    priority: str,
    intent: str,
    reason: str | None,
    after_the_fact: bool,
    deadline: datetime,
    now: datetime,
) -> HITLRequest:
    draft = str(result.get("proposed_answer") or "")
    # Judged once, against this agent's and tenant's texts: the queue and live events
    # show it without a query per row, and approving it is refused.
    non_answer = non_answers.check(draft, agent=run.agent, result=result)
    expires = (
        None
        if policy.expire_after_minutes is None
        else deadline + timedelta(minutes=policy.expire_after_minutes)
    )
    return HITLRequest(  # inserted by _announce_queued, with its history
        run=run,
        kind=kind,
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],
        question=run.input,
        proposed_answer=draft,
        intent=intent,
        confidence=result.get("confidence"),
        escalation_reason=(reason or result.get("escalation_reason") or "")[:2000],
        sources=list(result.get("sources") or []),
        context={
            "agent_id": str(run.agent_id),
            "session_id": str(run.session_id) if run.session_id else None,
            "user_id": run.user_id,
            "thread_id": result.get("thread_id") or "",
            "after_the_fact": after_the_fact,
            "non_answer": non_answer.as_json() if non_answer else None,
            # A proposed tool call (kind action): tool, arguments, input schema, safety.
            **({"action": result["action"]} if result.get("action") else {}),
        },
        policy=policy if policy.pk else None,
        required_role=policy.chain[0],
        sla_deadline=deadline,
        expires_at=expires,
        next_check_at=deadline,
        created_at=now,
    )


def _announce_queued(
    queued: HITLRequest,
    policy: EscalationPolicy,
    *,
    kind: str,
    priority: str,
    actor: Actor,
    now: datetime,
) -> None:
    """Insert the request with its "queued" event (live to the queue) and, if the policy
    says so, notify."""
    events.create_with_history(
        queued,
        "queued",
        actor=actor,
        at=now,
        detail={
            "kind": kind,
            "priority": priority,
            "reason": queued.escalation_reason,
            "required_role": queued.required_role,
            "policy": policy.name,
        },
        live="queued",
    )
    if policy.notify_on_queue:
        tasks.notify_on_commit(queued, "queued", role=queued.required_role, previous_assignee=None)


def escalate_run(
    *, actor: Actor, run: Run, reason: str, priority: str | None = None
) -> HITLRequest:
    """Send a run to a human by hand: one awaiting review (it resumes on the decision) or
    one that already settled (a review after the fact; edits and hand-offs are delivered
    to the conversation as a follow-up)."""
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        assignment.lock_assignments(run.tenant_id)
        current = Run.objects.get(pk=run.pk)
        if current.status in (RunStatus.PENDING, RunStatus.PROCESSING):
            raise conflict(
                f"Run is {current.status}; escalate it once it has settled.",
                "run_not_settled",
                status=current.status,
            )
        if current.status == RunStatus.CANCELLED:
            raise conflict("Run was cancelled.", "run_cancelled", status=current.status)
        existing = HITLRequest.objects.filter(run=current, status__in=OPEN_STATUSES).first()
        if existing is not None:
            raise conflict(
                "Run is already in review.", "already_in_review", request_id=str(existing.pk)
            )
        result = dict(current.result or {})
        settled = current.status != RunStatus.AWAITING_REVIEW
        if settled:
            # What the customer was told is what the reviewer judges after the fact.
            delivered = result.get("content") if current.status == RunStatus.COMPLETED else ""
            result["proposed_answer"] = delivered or ""
        try:
            with transaction.atomic():
                return request_review(
                    run=current,
                    result=result,
                    after_the_fact=settled,
                    actor=actor,
                    kind=Kind.MANUAL,
                    priority=priority,
                    reason=reason,
                )
        except IntegrityError:  # the pipeline queued it between our check and insert
            raise conflict("Run is already in review.", "already_in_review") from None


# --- claims ------------------------------------------------------------------------------


def _refusal(request_id: Any, reviewer: Reviewer) -> ContractError:
    """Why a compare-and-set on a request lost, from its state now."""
    current = HITLRequest.objects.get(pk=request_id)
    if current.status in DECIDED_STATUSES:
        return _already_decided(current)
    if current.assignee_id not in (None, reviewer.user_id):
        return conflict("Another reviewer holds this request.", "claimed_by_another")
    if not reviewer.may_review(current.required_role):
        return _forbidden(f"This request now needs the {current.required_role!r} role or higher.")
    return conflict("Request changed meanwhile; fetch it again.", "changed")


def claim(*, reviewer: Reviewer, request: HITLRequest) -> HITLRequest:
    _require_reviewer(reviewer, request)
    if reviewer.user_id is None:
        raise _forbidden("An API key cannot hold a request: claims are a person's.")
    now = datetime.now(UTC)
    with tenant_scope(request.tenant_id), transaction.atomic():
        won = HITLRequest.objects.filter(
            pk=request.pk,
            status__in=(Status.PENDING, Status.ESCALATED),
            assignee__isnull=True,
            required_role__in=reviewer.reviewable_roles(),
        ).update(status=Status.ASSIGNED, assignee_id=reviewer.user_id, assigned_at=now)
        if not won:
            current = events.reload(request.pk)
            if current.status == Status.ASSIGNED and current.assignee_id == reviewer.user_id:
                return current  # claiming what one already holds changes nothing
            raise _refusal(request.pk, reviewer)
        claimed = events.reload(request.pk)
        events.record(
            claimed,
            "claimed",
            actor=reviewer.actor,
            at=now,
            detail={"assignee_id": reviewer.user_id},
            live="assigned",
        )
    return claimed


def unclaim(*, reviewer: Reviewer, request: HITLRequest, reason: str = "") -> HITLRequest:
    """Give a request back; it goes to the next least-loaded reviewer (not the same one)."""
    now = datetime.now(UTC)
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        assignment.lock_assignments(request.tenant_id)
        current = HITLRequest.objects.get(pk=request.pk)
        if current.status != Status.ASSIGNED:
            if current.status in DECIDED_STATUSES:
                raise _refusal(request.pk, reviewer)
            raise conflict("Request is not assigned to anyone.", "not_assigned")
        holder = current.assignee_id
        if (holder != reviewer.user_id or holder is None) and not reviewer.manages_queue:
            raise _forbidden("Only the assignee, an operator or an owner may unclaim it.")
        back = Status.PENDING if current.escalation_level == 0 else Status.ESCALATED
        won = HITLRequest.objects.filter(
            pk=request.pk, status=Status.ASSIGNED, assignee_id=holder
        ).update(status=back, assignee=None, assigned_at=None)
        if not won:
            raise _refusal(request.pk, reviewer)
        released = events.reload(request.pk)
        events.record(
            released,
            "unclaimed",
            actor=reviewer.actor,
            at=now,
            detail={"previous_assignee_id": holder, "reason": reason},
            live="unclaimed",
        )
        assignment.auto_assign(released, actor=SYSTEM, now=now, exclude=[holder] if holder else [])
        return events.reload(request.pk)


# --- decisions ---------------------------------------------------------------------------


def review_delivery(request: HITLRequest, decision: str, *, reason: str) -> dict[str, Any]:
    """What the decision delivers to the run's conversation: the keyword arguments of
    ``agentflow.services.finish_review`` other than the actor."""
    tenant = Tenant.objects.get(pk=request.tenant_id)
    config = review_config(tier=tenant.tier, agent_id=request.context.get("agent_id"))
    close_thread = False
    after_the_fact = bool(request.context.get("after_the_fact"))
    content: str | None
    if decision == Decision.APPROVE:
        # Approving a settled run's answer confirms it: the customer already has it.
        content = None if after_the_fact else request.proposed_answer
    elif decision == Decision.EDIT:
        content = request.response
    elif config.on_reject == OnReject.CLOSE_THREAD:
        content, close_thread = None, True
    else:
        content = handoff_text(config, reason)
    return {
        "run_id": request.run_id,
        "review": {
            "request_id": str(request.pk),
            "decision": decision,
            "status": request.status,
            "reason": reason or None,
            "reviewer_id": request.decided_by_id,
        },
        "content": content,
        "close_thread": close_thread,
        "after_the_fact": after_the_fact,
    }


def approval_block(request: HITLRequest) -> non_answers.NonAnswer | None:
    """Why ``request``'s draft cannot be approved (None when it can): it is empty or not an
    answer, as judged when it was queued or against the agent's texts now."""
    queued = non_answers.stored(request.context, request.proposed_answer)
    if queued is not None:
        return queued
    run = Run.objects.select_related("agent").filter(pk=request.run_id).first()
    if run is None:
        return None
    return non_answers.check(request.proposed_answer, agent=run.agent, result=run.result)


def _nothing_to_approve(why: non_answers.NonAnswer) -> ContractError:
    advice = f"{why.detail} Edit (write the answer) or reject."
    return ContractError(
        f"Nothing to approve: {advice}",
        status_code=http.HTTP_422_UNPROCESSABLE_ENTITY,
        error_type="nothing_to_approve",
        extra={"reason": why.kind, "errors": {"decision": [advice]}},
    )


def _refuse_placeholder_edit(request: HITLRequest, response: str | None) -> None:
    """An edit delivers the reviewer's answer: the agent's own placeholder text is none
    (sending it back would promise the customer a person once more, and close the review)."""
    run = Run.objects.select_related("agent").filter(pk=request.run_id).first()
    why = non_answers.check(response, agent=run.agent if run else None)
    # A blank edit is the serializer's to refuse; a reviewer's own "we will call you" stands
    # (it is delivered, only never learnt).
    if why is not None and why.kind not in ("empty", "hand_off"):
        raise ContractError(
            f"The edited answer is not an answer: {why.detail}",
            status_code=http.HTTP_422_UNPROCESSABLE_ENTITY,
            error_type="not_an_answer",
            extra={
                "reason": why.kind,
                "errors": {
                    "response": [
                        "Write the answer the customer needs; to hand them to a person, reject."
                    ]
                },
            },
        )


def check_decision(
    *, reviewer: Reviewer, request: HITLRequest, decision: str, response: str | None
) -> None:
    """Refuse a decision before anything is locked: 403 for who decides, 422 for what."""
    _require_reviewer(reviewer, request)
    if request.kind == Kind.ACTION:
        return  # a proposed tool call, not an answer: agentflow.tooling checks its decision
    if decision == Decision.APPROVE and (why := approval_block(request)) is not None:
        raise _nothing_to_approve(why)
    if decision == Decision.EDIT:
        _refuse_placeholder_edit(request, response)


def take_decision(
    *,
    reviewer: Reviewer,
    request: HITLRequest,
    decision: str,
    response: str | None,
    reason: str,
    now: datetime,
) -> HITLRequest:
    """Compare-and-set the request to decided (409 when someone else won), under the
    tenant's assignment lock, held until the caller's transaction ends."""
    assignment.lock_assignments(request.tenant_id)
    won = HITLRequest.objects.filter(
        Q(assignee__isnull=True) | Q(assignee_id=reviewer.user_id),
        pk=request.pk,
        status__in=OPEN_STATUSES,
        required_role__in=reviewer.reviewable_roles(),
    ).update(
        status=DECISION_STATUS[decision],
        decision=decision,
        response=response or "",
        reason=reason,
        decided_by_id=reviewer.user_id,
        decided_at=now,
        next_check_at=None,
    )
    if not won:
        raise _refusal(request.pk, reviewer)
    return events.reload(request.pk)


def run_not_waiting(request: HITLRequest) -> ContractError:
    """The 409 of a decision whose run no longer waits for it (it was cancelled)."""
    run_status = Run.objects.filter(pk=request.run_id).values_list("status", flat=True)
    return conflict(
        "The run no longer waits for this review.",
        "run_not_awaiting_review",
        run_status=run_status.first(),
    )


def record_decision(
    decided: HITLRequest,
    *,
    reviewer: Reviewer,
    response: str | None,
    reason: str,
    now: datetime,
) -> None:
    """The decision's history, audit and live event; the reviewer has room for the next."""
    detail: dict[str, Any] = {"decision": decided.decision, "reason": reason}
    if response is not None:
        detail["response"] = response
    events.record(
        decided, decided.status, actor=reviewer.actor, at=now, detail=detail, live="decided"
    )
    assignment.dispatch(actor=SYSTEM, now=now)


# --- reviewers ---------------------------------------------------------------------------


def set_availability(
    *, actor: Actor, tenant_id: int, user_id: int, available: bool, capacity: int | None = None
) -> ReviewerAvailability:
    """Whether a member takes automatic assignments; becoming available pulls waiting work."""
    if capacity is not None and not 1 <= capacity <= 1000:
        raise ValueError("capacity must be between 1 and 1000")
    now = datetime.now(UTC)
    with tenant_scope(tenant_id), transaction.atomic():
        assignment.lock_assignments(tenant_id)
        role = Membership.objects.filter(user_id=user_id).values_list("role", flat=True).first()
        if role not in REVIEW_ROLES:
            raise ValueError("only reviewers, operators and owners of the tenant can review")
        defaults: dict[str, Any] = {"available": available}
        if capacity is not None:
            defaults["capacity"] = capacity
        row, _ = ReviewerAvailability.objects.update_or_create(
            user_id=user_id,
            defaults=defaults,
            create_defaults={
                "capacity": setting_int("HITL_DEFAULT_CAPACITY"),
                **defaults,
            },
        )
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="hitl.availability_changed",
            target_type="user",
            target_id=user_id,
            changes={"available": available, "capacity": row.capacity},
        )
        if available:
            assignment.dispatch(actor=SYSTEM, now=now)
    return row
