"""Walking an audit chain: the first changed, inserted, reordered, deleted or missing event.

The walk recomputes every hash from the stored fields and checks three things per event:
its own hash (a changed or reordered event fails here, since the sequence number is part
of what is hashed), the link to the previous event's hash (an inserted or deleted event
breaks it) and the sequence (no gaps). A chain rewritten consistently by someone with
database access, or cut short at the tail, is still internally valid: only the heads
exported outside the database (:mod:`governance.checkpoints`) can tell, so the walk also
compares the chain against them, and counts the events no exported head covers yet
(``unanchored``: what could still be cut off undetected, until the next anchor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

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
    values = dict(zip(_FIELDS, row, strict=True))
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


def _rows(tenant_id: int | None) -> Iterable[tuple[Any, ...]]:
    """The chain in sequence order, in batches by keyset (no long-lived cursor)."""
    after = 0
    while True:
        batch = list(
            AuditEvent.unscoped.filter(**chain_filter(tenant_id), sequence__gt=after)
            .order_by("sequence")
            .values_list(*_FIELDS)[:_BATCH]
        )
        yield from batch
        if len(batch) < _BATCH:
            return
        after = batch[-1][1]


def verify_chain(tenant_id: int | None, checkpoints: Iterable[Checkpoint] = ()) -> Verification:
    """Walk one chain (``tenant_id`` None: the platform chain) against its checkpoints.

    The chain is sealed first: events appended unsealed are part of what is verified.
    """
    seal_chain(tenant_id)
    expected_hashes = {c.sequence: c.hash for c in checkpoints}
    newest = max(expected_hashes, default=None)
    verified_upto = 0  # the last sequence a checkpoint vouched for
    prev_hash, count, sequence = GENESIS, 0, 0
    for row in _rows(tenant_id):
        count += 1
        sequence, stored_prev, stored_hash = row[1], row[-2], row[-1]
        bad = None
        if compute_hash(stored_prev, _payload(row)) != stored_hash:
            bad = "hash_mismatch"
        elif stored_prev != prev_hash:
            bad = "broken_link"
        elif sequence != count:
            bad = "sequence_gap"
        elif sequence in expected_hashes and expected_hashes[sequence] != stored_hash:
            # Internally valid but not what was exported: rewritten after the checkpoint
            # was taken, somewhere after the last checkpoint that still matched.
            bad = "checkpoint_mismatch"
            sequence = verified_upto + 1
        if bad is not None:
            return Verification(False, count, sequence, bad, checkpoint_sequence=newest)
        if sequence in expected_hashes:
            verified_upto = sequence
        prev_hash = stored_hash
    if newest is not None and count < newest:
        # Fewer events than an exported head: the tail was cut off.
        return Verification(False, count, count + 1, "truncated", checkpoint_sequence=newest)
    return Verification(
        True,
        count,
        head_sequence=sequence if count else None,
        head_hash=prev_hash if count else None,
        checkpoint_sequence=newest,
        unanchored=count - (newest or 0),
    )
