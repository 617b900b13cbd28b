"""GDPR erasure of one end user's data in a tenant (SPEC 8).

What an end user leaves behind: their sessions (with the conversation threads and the
thread centroids, i.e. vectors), messages, episodic memory cases (with their pgvector
embeddings), the input and output of their runs, and the first responses of their runs
kept for idempotent replays. Erasure deletes what is theirs alone and empties what must
stay for accounting (a run's row keeps status, tokens and cost; its content goes). Other
apps holding copies add an eraser with :func:`register_eraser`; it runs in the same
transaction. Review requests (HITL) are erased here, their app predating the registry.

The audit log is never touched (it is append-only, so its writers must keep end-user
content out of it): the erasure appends one event naming the subject by a digest and
counting what went.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from django.apps import apps as django_apps
from django.db import transaction
from django.db.models import Q

from agentflow.core.api.exceptions import ContractError
from agentflow.models import AgentSession, MemoryCase, Message, Run, Step, Thread
from governance.audit import Actor, append
from tenants.context import tenant_scope
from tenants.models import IdempotencyRecord, Tenant

ERASED = "[erased]"
# (tenant_id, user_id) -> {what: rows}; runs inside the tenant's scope and transaction.
Eraser = Callable[[int, str], dict[str, int]]
_erasers: dict[str, Eraser] = {}


def register_eraser(name: str, eraser: Eraser) -> None:
    """Let another app erase its copies of an end user's data (call from ``ready()``)."""
    _erasers[name] = eraser


def subject_digest(tenant_id: int, user_id: str) -> str:
    """How the audit log names an erased end user: provable on request, not readable."""
    return hashlib.sha256(f"{tenant_id}:{user_id}".encode()).hexdigest()


@dataclass(frozen=True)
class ErasureReport:
    subject: str
    erased: dict[str, int] = field(default_factory=dict)


def _erase_agent_data(tenant_id: int, user_id: str) -> dict[str, int]:
    sessions = AgentSession.objects.filter(user_id=user_id)
    runs = Run.objects.filter(user_id=user_id)
    counts = {
        "messages": Message.objects.filter(session__in=sessions).delete()[0]
        + Message.objects.filter(run__in=runs).delete()[0],
        "threads": Thread.objects.filter(session__in=sessions).delete()[0],
        "memory_cases": MemoryCase.objects.filter(user_id=user_id).delete()[0],
        "step_details": Step.objects.filter(run__in=runs).exclude(detail={}).update(detail={}),
    }
    counts["sessions"] = sessions.delete()[0]
    # Runs stay (usage, quotas and the audit trail refer to them); their content goes.
    counts["runs"] = runs.update(
        user_id=ERASED, input="", result=None, metadata={}, error="", session=None
    )
    # First responses kept for Idempotency-Key replays carry the run's user id and answer.
    counts["idempotency_records"] = IdempotencyRecord.objects.filter(
        owner=f"tenant:{tenant_id}", response_body__user_id=user_id
    ).delete()[0]
    return counts


def _cancel_active_runs(actor: Actor, user_id: str) -> int:
    """Stop the user's unfinished runs first (audited, through the run service): nothing may
    deliver an answer into a conversation that is about to disappear."""
    from agentflow.services import CANCELLABLE, cancel_run  # noqa: PLC0415 - left: goes with the erasers registry (item 5)

    cancelled = 0
    for run in Run.objects.filter(user_id=user_id, status__in=CANCELLABLE):
        try:
            cancel_run(actor=actor, run=run)
        except ContractError:
            continue  # it finished meanwhile: its content is erased below all the same
        cancelled += 1
    return cancelled


def _erase_review_copies(tenant_id: int, user_id: str) -> dict[str, int]:
    """HITL review requests copy the question, the proposed answer and the reviewer's
    response; their history may quote them. Requests stay (SLA figures count them)."""
    if not django_apps.is_installed("hitl"):
        return {}
    from hitl.models import HITLEvent, HITLRequest  # noqa: PLC0415 - left: goes with the erasers registry (item 5)

    requests = list(
        HITLRequest.objects.filter(
            Q(run__user_id=user_id) | Q(context__user_id=user_id)
        ).values_list("pk", "context")
    )
    for pk, context in requests:
        HITLRequest.objects.filter(pk=pk).update(
            question="",
            proposed_answer="",
            response="",
            reason="",
            escalation_reason="",
            context={**(context or {}), "user_id": ERASED},
        )
    history = HITLEvent.objects.filter(request_id__in=[pk for pk, _ in requests]).exclude(detail={})
    return {"review_requests": len(requests), "review_history": history.update(detail={})}


def erase_end_user(*, actor: Actor, tenant: Tenant, user_id: str) -> ErasureReport:
    """Erase ``user_id``'s data in ``tenant`` everywhere it lives, atomically and audited.

    Order: unfinished runs are cancelled, other apps erase their copies (while the runs
    still name the user), then the agent data goes, renaming the runs' user last.
    """
    if not user_id or len(user_id) > 200:
        raise ValueError("user_id must be 1-200 characters")
    subject = subject_digest(tenant.pk, user_id)
    with transaction.atomic(), tenant_scope(tenant.pk):
        erased: dict[str, int] = {"cancelled_runs": _cancel_active_runs(actor, user_id)}
        for name, eraser in sorted(_erasers.items()):
            for what, rows in eraser(tenant.pk, user_id).items():
                erased[f"{name}.{what}"] = rows
        erased.update(_erase_review_copies(tenant.pk, user_id))
        erased.update(_erase_agent_data(tenant.pk, user_id))
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="end_user.erased",
            target_type="end_user",
            target_id=subject,
            changes={"erased": erased},
        )
    return ErasureReport(subject, erased)
