"""Walking an audit chain: the first changed, inserted, reordered, deleted or missing event.

The walk recomputes every hash from the stored fields and checks three things per event:
its own hash (a changed or reordered event fails here, since the sequence number is part
of what is hashed), the link to the previous event's hash (an inserted or deleted event
breaks it) and the sequence (no gaps). A chain rewritten consistently by someone with
database access, or cut short at the tail, is still internally valid: only the heads
exported outside the database (:mod:`governance.checkpoints`) can tell, so the walk also
compares the chain against them, and counts the events no exported head covers yet
(``unanchored``: what could still be cut off undetected, until the next anchor).

:func:`verify_chain_incrementally` (the dashboard's audit page) gives the same answer
without re-hashing the whole chain on every call: it remembers, in this process, how far
a walk got and a digest of the rows it walked (SHA-256 over each row's SHA-256, computed
by PostgreSQL from the stored row). The next call has PostgreSQL recompute that digest
over the same prefix (one aggregate, no Python per event): if any walked row was
changed, deleted or inserted, the digests differ and the whole chain is walked again;
otherwise only the events after it are walked, and the checkpoints that fall in the
prefix are compared with the stored hashes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models.expressions import RawSQL

from governance.audit import GENESIS, chain_filter, compute_hash, seal_chain
from governance.checkpoints import Checkpoint
from governance.models import AuditEvent

# The fields hashed for each event, in the order the walk reads them.
_FIELDS = (
    "tenant_id",
    "sequence",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "changes",
    "correlation_id",
    "prev_hash",
    "hash",
)
_BATCH = 2_000


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    first_bad: int | None = None
    reason: str | None = None  # hash_mismatch | broken_link | sequence_gap | checkpoint_*
    head_sequence: int | None = None
    head_hash: str | None = None
    checkpoint_sequence: int | None = None  # the newest exported head that was checked
    unanchored: int = 0  # events after the newest exported head (all of them when none)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _payload(row: tuple[Any, ...]) -> dict[str, Any]:
    values = dict(zip(_FIELDS, row[: len(_FIELDS)], strict=True))
    occurred_at: datetime = values["occurred_at"]
    return {
        "tenant_id": values["tenant_id"],
        "sequence": values["sequence"],
        "occurred_at": occurred_at.astimezone(UTC).isoformat(),
        "actor_type": values["actor_type"],
        "actor_id": values["actor_id"],
        "action": values["action"],
        "target_type": values["target_type"],
        "target_id": values["target_id"],
        "changes": values["changes"],
        "correlation_id": values["correlation_id"],
    }


# Each row's digest (SHA-256 of the stored row as PostgreSQL prints it, every column): the
# walk fetches it with the fields it checks; the prefix check recomputes it in one aggregate
# and hashes the digests' concatenation, in sequence order, as the walk did.
_ROW_DIGEST = "sha256(convert_to(governance_auditevent::text, 'UTF8'))"
_PREFIX_DIGEST_SQL = """
SELECT encode(sha256(coalesce(string_agg(
    sha256(convert_to(governance_auditevent::text, 'UTF8')), ''::bytea ORDER BY sequence
), ''::bytea)), 'hex')
FROM governance_auditevent
WHERE tenant_id = %s AND sequence IS NOT NULL AND sequence <= %s
"""
# The platform chain's (tenant_id = NULL is never true; IS NOT DISTINCT FROM uses no index).
_PLATFORM_PREFIX_DIGEST_SQL = _PREFIX_DIGEST_SQL.replace("tenant_id = %s", "tenant_id IS NULL")


def _rows(tenant_id: int | None, after: int = 0) -> Iterator[tuple[Any, ...]]:
    """The chain after ``after`` in sequence order, by keyset batches (no long-lived
    cursor); each row is the hashed fields followed by the row's digest."""
    digest = RawSQL(_ROW_DIGEST, [])  # noqa: S611 - a constant expression, no parameters
    while True:
        batch = list(
            AuditEvent.unscoped.filter(**chain_filter(tenant_id), sequence__gt=after)
            .annotate(row_digest=digest)
            .order_by("sequence")
            .values_list(*_FIELDS, "row_digest")[:_BATCH]
        )
        yield from batch
        if len(batch) < _BATCH:
            return
        after = batch[-1][1]


@dataclass
class _Walk:
    """How far a walk got: events 1..count are internally valid and match the checkpoints
    among them; ``digest`` has been fed their row digests."""

    count: int = 0
    prev_hash: str = GENESIS
    verified_upto: int = 0  # the last sequence a checkpoint vouched for
    digest: Any = field(default_factory=hashlib.sha256)
    confirmed: dict[int, str] = field(default_factory=dict)  # checkpoints that matched


def _walk(
    tenant_id: int | None, walk: _Walk, expected: dict[int, str], newest: int | None
) -> Verification | None:
    """Extend ``walk`` over the events after it; the failure found, if any."""
    for row in _rows(tenant_id, after=walk.count):
        walk.count += 1
        sequence, stored_prev, stored_hash = row[1], row[-3], row[-2]
        bad = None
        if compute_hash(stored_prev, _payload(row)) != stored_hash:
            bad = "hash_mismatch"
        elif stored_prev != walk.prev_hash:
            bad = "broken_link"
        elif sequence != walk.count:
            bad = "sequence_gap"
        elif sequence in expected and expected[sequence] != stored_hash:
            # Internally valid but not what was exported: rewritten after the checkpoint
            # was taken, somewhere after the last checkpoint that still matched.
            bad = "checkpoint_mismatch"
            sequence = walk.verified_upto + 1
        if bad is not None:
            return Verification(False, walk.count, sequence, bad, checkpoint_sequence=newest)
        if sequence in expected:
            walk.verified_upto = sequence
            walk.confirmed[sequence] = stored_hash
        walk.prev_hash = stored_hash
        walk.digest.update(bytes(row[-1]))
    return None


def _outcome(walk: _Walk, newest: int | None) -> Verification:
    if newest is not None and walk.count < newest:
        # Fewer events than an exported head: the tail was cut off.
        return Verification(
            False, walk.count, walk.count + 1, "truncated", checkpoint_sequence=newest
        )
    return Verification(
        True,
        walk.count,
        head_sequence=walk.count or None,
        head_hash=walk.prev_hash if walk.count else None,
        checkpoint_sequence=newest,
        unanchored=walk.count - (newest or 0),
    )


def verify_chain(tenant_id: int | None, checkpoints: Iterable[Checkpoint] = ()) -> Verification:
    """Walk one chain (``tenant_id`` None: the platform chain) against its checkpoints.

    The chain is sealed first: events appended unsealed are part of what is verified.
    """
    seal_chain(tenant_id)
    expected = {c.sequence: c.hash for c in checkpoints}
    newest = max(expected, default=None)
    walk = _Walk()
    return _walk(tenant_id, walk, expected, newest) or _outcome(walk, newest)


# --- incremental: what this process already walked ----------------------------------------

# Per chain, the last successful walk; a few hundred bytes each, the least recent dropped.
_WALKED: OrderedDict[int | None, _Walk] = OrderedDict()
_WALKED_MAX = 256
_WALKED_LOCK = threading.Lock()


def _remembered(tenant_id: int | None) -> _Walk | None:
    with _WALKED_LOCK:
        known = _WALKED.get(tenant_id)
        if known is None:
            return None
        _WALKED.move_to_end(tenant_id)
    # A copy to extend: the remembered walk may be resumed by another thread meanwhile.
    return replace(known, digest=known.digest.copy(), confirmed=dict(known.confirmed))


def _remember(tenant_id: int | None, walk: _Walk) -> None:
    with _WALKED_LOCK:
        _WALKED[tenant_id] = walk
        _WALKED.move_to_end(tenant_id)
        while len(_WALKED) > _WALKED_MAX:
            _WALKED.popitem(last=False)


def forget_walks() -> None:
    """Drop what this process remembers (the next call walks every chain from the start)."""
    with _WALKED_LOCK:
        _WALKED.clear()


def _prefix_digest(tenant_id: int | None, upto: int) -> str:
    with connection.cursor() as cursor:
        if tenant_id is None:
            cursor.execute(_PLATFORM_PREFIX_DIGEST_SQL, [upto])
        else:
            cursor.execute(_PREFIX_DIGEST_SQL, [tenant_id, upto])
        return str(cursor.fetchone()[0])


def _check_prefix(
    tenant_id: int | None, walk: _Walk, expected: dict[int, str], newest: int | None
) -> Verification | None:
    """Compare the checkpoints within the walked prefix with the stored hashes (as the
    walk would have, in order); those matched before are not looked up again."""
    within = sorted(s for s in expected if s <= walk.count)
    unknown = [s for s in within if walk.confirmed.get(s) != expected[s]]
    stored = dict(
        AuditEvent.unscoped.filter(**chain_filter(tenant_id), sequence__in=unknown).values_list(
            "sequence", "hash"
        )
    )
    verified_upto = 0
    for sequence in within:
        if walk.confirmed.get(sequence) != expected[sequence]:
            if stored.get(sequence) != expected[sequence]:
                return Verification(
                    False,
                    sequence,
                    verified_upto + 1,
                    "checkpoint_mismatch",
                    checkpoint_sequence=newest,
                )
            walk.confirmed[sequence] = expected[sequence]
        verified_upto = sequence
    walk.verified_upto = verified_upto
    return None


def verify_chain_incrementally(
    tenant_id: int | None, checkpoints: Iterable[Checkpoint] = ()
) -> Verification:
    """What :func:`verify_chain` answers, re-hashing only the events this process has not
    walked yet (all of them when a walked row changed since: see the module's docstring)."""
    seal_chain(tenant_id)
    expected = {c.sequence: c.hash for c in checkpoints}
    newest = max(expected, default=None)
    walk = _remembered(tenant_id)
    if walk is not None and _prefix_digest(tenant_id, walk.count) != walk.digest.hexdigest():
        walk = None  # a walked row was changed, removed or added: walk it all again
    if walk is None:
        walk = _Walk()
    else:
        failure = _check_prefix(tenant_id, walk, expected, newest)
        if failure is not None:
            return failure
    failure = _walk(tenant_id, walk, expected, newest)
    if failure is not None:
        return failure
    _remember(tenant_id, walk)
    return _outcome(walk, newest)
