"""GDPR erasure of one end user's data in a tenant (SPEC 8).

What an end user leaves behind: their sessions (with the conversation threads and the
thread centroids, i.e. vectors), messages, episodic memory cases (with their pgvector
embeddings), the input and output of their runs, and the first responses of their runs
kept for idempotent replays. Erasure deletes what is theirs alone and empties what must
stay for accounting (a run's row keeps status, tokens and cost; its content goes). Other
apps holding copies (review requests, golden paths) add an eraser with
:func:`register_eraser`; it runs in the same transaction.

The audit log is never touched (it is append-only, and holds no end-user content): the
erasure appends one event naming the subject by a digest and counting what went.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

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


register_eraser("agentflow", _erase_agent_data)


def erase_end_user(*, actor: Actor, tenant: Tenant, user_id: str) -> ErasureReport:
    """Erase ``user_id``'s data in ``tenant`` everywhere it lives, atomically and audited."""
    if not user_id or len(user_id) > 200:
        raise ValueError("user_id must be 1-200 characters")
    subject = subject_digest(tenant.pk, user_id)
    erased: dict[str, int] = {}
    with transaction.atomic(), tenant_scope(tenant.pk):
        for name, eraser in sorted(_erasers.items()):
            for what, rows in eraser(tenant.pk, user_id).items():
                erased[what if name == "agentflow" else f"{name}.{what}"] = rows
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="end_user.erased",
            target_type="end_user",
            target_id=subject,
            changes={"erased": erased},
        )
    return ErasureReport(subject, erased)
