"""GDPR erasure of one end user's data in a tenant (SPEC 8): the orchestration only.

Each app erases its own copies through the registry in :mod:`tenants.erasers` (agentflow:
sessions, threads, messages, memory, steps and runs, its unfinished runs cancelled
through its own service; hitl: review copies; learning: stream, graph and what the loop
learnt; tenants: idempotency records). This module runs them in order (stop the user's
runs, other copies while the runs still name the user, the conversations last), in one
transaction and the tenant's scope, and audits the result; it writes no app's tables.

The audit log is never touched (it is append-only, so its writers must keep end-user
content out of it): the erasure appends one event naming the subject by a digest and
counting what went.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import transaction

from governance.audit import Actor, append
from tenants.context import tenant_scope
from tenants.erasers import ERASED, ErasureSubject, erasers

if TYPE_CHECKING:
    from tenants.models import Tenant

__all__ = ["ERASED", "ErasureReport", "erase_end_user", "subject_digest"]


def subject_digest(tenant_id: int, user_id: str) -> str:
    """How the audit log names an erased end user: provable on request, not readable."""
    return hashlib.sha256(f"{tenant_id}:{user_id}".encode()).hexdigest()


@dataclass(frozen=True)
class ErasureReport:
    subject: str
    erased: dict[str, int] = field(default_factory=dict)


def erase_end_user(*, actor: Actor, tenant: Tenant, user_id: str) -> ErasureReport:
    """Erase ``user_id``'s data in ``tenant`` everywhere it lives, atomically and audited.

    Order (``tenants.erasers.Stage``): unfinished runs are cancelled, other apps erase
    their copies (while the runs still name the user), then the agent data goes,
    renaming the runs' user last.
    """
    if not user_id or len(user_id) > 200:
        raise ValueError("user_id must be 1-200 characters")
    subject = ErasureSubject(actor=actor, tenant_id=tenant.pk, user_id=user_id)
    digest = subject_digest(tenant.pk, user_id)
    with transaction.atomic(), tenant_scope(tenant.pk):
        erased: dict[str, int] = {}
        for eraser in erasers():
            erased.update(eraser.erase(subject))
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="end_user.erased",
            target_type="end_user",
            target_id=digest,
            changes={"erased": erased},
        )
    return ErasureReport(digest, erased)
