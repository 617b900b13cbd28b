"""Appending to and verifying the per-tenant audit hash chain.

Appends take a transaction-scoped advisory lock per chain, so concurrent
writers (any number of processes) produce one linear chain with contiguous
sequence numbers; the event commits or rolls back with the write it records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from agentflow.core.context import current_correlation_id
from governance.models import AuditEvent

GENESIS = "0" * 64
CHAIN_LOCK_CLASS = 7_361  # first key of the per-chain advisory lock (pg_advisory_xact_lock)
_PLATFORM_CHAIN = 0  # advisory-lock key of the chain with no tenant


@dataclass(frozen=True)
class Actor:
    type: str  # "user" | "api_key" | "system"
    id: str = ""

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls("system", name)

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        """The API key (by prefix) or the signed-in user behind a DRF request."""
        key_prefix = getattr(getattr(request, "auth", None), "prefix", None)
        if key_prefix:
            return cls("api_key", key_prefix)
        return cls("user", str(request.user.pk))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_default)


def event_payload(event: AuditEvent) -> dict[str, Any]:
    return {
        "tenant_id": event.tenant_id,
        "sequence": event.sequence,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "changes": event.changes,
        "correlation_id": event.correlation_id,
    }


def compute_hash(prev_hash: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode()).hexdigest()


def chain_filter(tenant_id: int | None) -> dict[str, Any]:
    """Lookup of one chain's events (``tenant_id`` None: the platform chain)."""
    return {"tenant__isnull": True} if tenant_id is None else {"tenant_id": tenant_id}


def chain_head(tenant_id: int | None) -> dict[str, Any] | None:
    """``{"sequence", "hash"}`` of the chain's last event, or None for an empty chain."""
    head = (
        AuditEvent.unscoped.filter(**chain_filter(tenant_id))
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    return dict(head) if head is not None else None


def append(
    *,
    tenant_id: int | None,
    actor: Actor,
    action: str,
    target_type: str = "",
    target_id: str | int | UUID = "",
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the tenant's chain inside the caller's transaction."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                [CHAIN_LOCK_CLASS, tenant_id if tenant_id is not None else _PLATFORM_CHAIN],
            )
        last = chain_head(tenant_id)
        event = AuditEvent(
            tenant_id=tenant_id,
            sequence=(last["sequence"] + 1) if last else 1,
            occurred_at=datetime.now(UTC),
            actor_type=actor.type,
            actor_id=str(actor.id),
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            # Round-trip through canonical JSON so what we hash is what JSONB returns.
            changes=json.loads(canonical_json(changes or {})),
            correlation_id=current_correlation_id() or "",
            prev_hash=last["hash"] if last else GENESIS,
        )
        event.hash = compute_hash(event.prev_hash, event_payload(event))
        event.save(force_insert=True)
    return event
