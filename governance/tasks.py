"""Celery entry points of governance: thin, idempotent (ARCHITECTURE habit 5)."""

from __future__ import annotations

from celery import shared_task

from governance.audit import seal_pending
from governance.checkpoints import CheckpointExportFailed, anchor_heads, export_checkpoints


@shared_task(name="maintenance.audit_seal", ignore_result=True, max_retries=0, expires=10)
def audit_seal() -> int:
    """Chain the audit events appended unsealed (beat, every ``AUDIT_SEAL_SECONDS``).

    No retries: the next tick seals whatever this one left, and readers seal first anyway.
    """
    return seal_pending()


@shared_task(
    name="maintenance.audit_checkpoint",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(CheckpointExportFailed,),
    retry_backoff=True,
    max_retries=5,
)
def audit_checkpoint() -> int:
    """Export the head of every audit chain that moved (a platform sweep: no tenant).

    Idempotent: an unchanged chain is skipped, and a head exported twice is harmless.
    """
    return len(export_checkpoints())


@shared_task(name="maintenance.audit_anchor", ignore_result=True, max_retries=0, expires=60)
def audit_anchor() -> int:
    """Anchor every moved chain head in the checkpoint directory (beat, every few seconds).

    No retries: the next beat tick anchors the same heads, and a backlog of stale ticks
    expires instead of piling up behind a stopped worker.
    """
    return len(anchor_heads())
