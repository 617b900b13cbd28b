"""Appending to and sealing the per-tenant audit hash chain.

An event is recorded in two steps, so that recording it never serialises a tenant:

* ``append`` inserts the event *unsealed* (no sequence, no hash) in the caller's
  transaction: one INSERT, no lock, and it commits or rolls back with the write it records.
* ``seal_chain`` gives a chain's unsealed events, in id order, their sequence numbers,
  previous hash and hash, under a transaction-scoped advisory lock per chain, so one linear
  chain with contiguous sequence numbers results whatever the number of writers.

Inside :func:`batched_appends` (the escalation of a run), unsealed appends are held and
written together in one INSERT when the block ends, in the order they were made.

The run path appends with ``seal_now=False``: the beat task ``maintenance.audit_seal``
seals every ``AUDIT_SEAL_SECONDS``, and every reader of a chain (verification, exports,
the audit API and pages, checkpoints and anchors) seals it first, so nobody reads an
unsealed tail. Administrative writes (``seal_now=True``, the default) seal at once, in
their own transaction. The database trigger allows exactly one change of a row: sealing
an unsealed event, with every recorded field unchanged (governance migration 0005).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    """``{"sequence", "hash"}`` of the chain's last sealed event, or None for an empty chain."""
    head = (
        AuditEvent.unscoped.filter(**chain_filter(tenant_id), sequence__isnull=False)
        .order_by("-sequence")
        .values("sequence", "hash")
        .first()
    )
    return dict(head) if head is not None else None


# The unsealed appends held by the innermost batched_appends block (None: none is open).
_held: ContextVar[list[AuditEvent] | None] = ContextVar("audit_held", default=None)


def append(
    *,
    tenant_id: int | None,
    actor: Actor,
    action: str,
    target_type: str = "",
    target_id: str | int | UUID = "",
    changes: dict[str, Any] | None = None,
    seal_now: bool = True,
) -> AuditEvent:
    """Record one event of the tenant's chain inside the caller's transaction.

    ``seal_now=False`` (the run path): one INSERT and no lock (held for the block's INSERT
    inside :func:`batched_appends`); the sealer chains it within ``AUDIT_SEAL_SECONDS`` of
    its commit. Otherwise the chain is sealed up to this event before returning (its lock
    held until the caller commits).
    """
    event = AuditEvent(
        tenant_id=tenant_id,
        occurred_at=datetime.now(UTC),
        actor_type=actor.type,
        actor_id=str(actor.id),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        # Round-trip through canonical JSON so what we hash is what JSONB returns.
        changes=json.loads(canonical_json(changes or {})),
        correlation_id=current_correlation_id() or "",
    )
    held = _held.get()
    if not seal_now and held is not None:
        held.append(event)
        return event
    _flush_held()  # what was appended before this event is inserted before it
    if not seal_now:
        append_many([event])
        return event
    with transaction.atomic(savepoint=False):
        event.save(force_insert=True)
        sealed = {e.pk: e for e in seal_chain(tenant_id)}
    mine = sealed[event.pk]
    event.sequence, event.prev_hash, event.hash = mine.sequence, mine.prev_hash, mine.hash
    return event


def append_many(events: list[AuditEvent]) -> None:
    """Insert unsealed events in one statement; their ids (so chain order) follow the list.

    The statement is written once per batch size (the run path appends on every run):
    the columns of an unsealed event, ``sequence`` left NULL and both hashes empty.
    """
    if not events:
        return
    params: list[Any] = []
    for event in events:
        params += [
            event.tenant_id,
            event.occurred_at,
            event.actor_type,
            event.actor_id,
            event.action,
            event.target_type,
            event.target_id,
            json.dumps(event.changes),
            event.correlation_id,
        ]
    with connection.cursor() as cursor:
        cursor.execute(_insert_unsealed_sql(len(events)), params)
        ids = [row[0] for row in cursor.fetchall()]
    for event, pk in zip(events, ids, strict=True):
        event.pk, event.prev_hash, event.hash = pk, "", ""
        event._state.adding = False


@functools.lru_cache(maxsize=64)
def _insert_unsealed_sql(count: int) -> str:
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, '', '')"] * count)
    return _INSERT_UNSEALED_SQL.format(rows=rows)  # placeholders only: values are parameters


_INSERT_UNSEALED_SQL = """
INSERT INTO governance_auditevent (tenant_id, occurred_at, actor_type, actor_id, action,
    target_type, target_id, changes, correlation_id, prev_hash, hash)
VALUES {rows} RETURNING id
"""


def _flush_held() -> None:
    held = _held.get()
    if held:
        append_many(held)
        held.clear()


@contextmanager
def batched_appends() -> Iterator[None]:
    """Hold the block's unsealed appends and insert them in one statement when it ends.

    Use it inside the transaction that the events record: on an exception nothing is
    written (the transaction rolls back with the writes they would have recorded).
    """
    token = _held.set([])
    try:
        yield
        _flush_held()
    finally:
        _held.reset(token)


SEAL_BATCH = 1_000
_SEAL_SQL = """
UPDATE governance_auditevent AS e
SET sequence = v.sequence, prev_hash = v.prev_hash, hash = v.hash
FROM (VALUES {rows}) AS v(id, sequence, prev_hash, hash)
WHERE e.id = v.id AND e.sequence IS NULL
"""


def seal_chain(tenant_id: int | None) -> list[AuditEvent]:
    """Chain every unsealed event of one chain that this transaction sees; returns them.

    Events still uncommitted elsewhere are not seen, and are sealed by a later call.
    """
    with transaction.atomic(savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                [CHAIN_LOCK_CLASS, tenant_id if tenant_id is not None else _PLATFORM_CHAIN],
            )
        # Read after the lock (a statement of its own): a sealer that held it has committed.
        last = chain_head(tenant_id)
        sequence, prev_hash = (last["sequence"], last["hash"]) if last else (0, GENESIS)
        sealed: list[AuditEvent] = []
        while True:
            batch = list(
                AuditEvent.unscoped.filter(
                    **chain_filter(tenant_id), sequence__isnull=True
                ).order_by("id")[:SEAL_BATCH]
            )
            for event in batch:
                sequence += 1
                event.sequence, event.prev_hash = sequence, prev_hash
                event.hash = prev_hash = compute_hash(prev_hash, event_payload(event))
            _write_seals(batch)
            sealed += batch
            if len(batch) < SEAL_BATCH:
                return sealed


def _write_seals(events: list[AuditEvent]) -> None:
    if not events:
        return
    rows = ", ".join(["(%s::bigint, %s::bigint, %s, %s)"] * len(events))
    params = [v for e in events for v in (e.pk, e.sequence, e.prev_hash, e.hash)]
    with connection.cursor() as cursor:
        cursor.execute(_SEAL_SQL.format(rows=rows), params)


def seal_pending() -> int:
    """Seal every chain with unsealed events, each in a short transaction of its own."""
    chains = list(
        AuditEvent.unscoped.filter(sequence__isnull=True)
        .order_by()
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    count = 0
    for tenant_id in chains:
        with transaction.atomic():
            count += len(seal_chain(tenant_id))
    return count
