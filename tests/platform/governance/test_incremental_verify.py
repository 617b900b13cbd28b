"""Incremental verification (the audit page's): after a walk was remembered, every attack
still gets exactly the answer of a full walk, and an unchanged prefix is not re-hashed.

The attacker is the one of test_audit_chain.py: full database access, triggers off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from governance.audit import Actor, append
from governance.checkpoints import export_checkpoints, read_checkpoints
from governance.models import AuditEvent
from governance.verify import Verification, verify_chain, verify_chain_incrementally
from tenants.models import Tenant
from tests.platform.governance.conftest import CHAIN_LENGTH, as_attacker, grow_chain
from tests.platform.governance.test_audit_chain import TABLE, _rewrite_from

Attack = Callable[[Tenant], None]


# Each test starts with no chain walk remembered by this process (`audit_walks`).
pytestmark = pytest.mark.usefixtures("forgotten_audit_walks")


def _both(tenant: Tenant, directory: Path | None = None) -> tuple[Verification, Verification]:
    exported = read_checkpoints(tenant.pk, directory) if directory else []
    return verify_chain_incrementally(tenant.pk, exported), verify_chain(tenant.pk, exported)


def test_only_the_events_after_the_remembered_walk_are_hashed(
    chain: Tenant, hashed: list[int]
) -> None:
    first = verify_chain_incrementally(chain.pk)
    assert (first.ok, first.events) == (True, CHAIN_LENGTH)
    assert hashed == list(range(1, CHAIN_LENGTH + 1))
    hashed.clear()
    again = verify_chain_incrementally(chain.pk)
    assert again == first
    assert hashed == []  # nothing new: the prefix digest vouched for every event
    grow_chain(chain, CHAIN_LENGTH + 3)
    hashed.clear()
    grown = verify_chain_incrementally(chain.pk)
    assert (grown.ok, grown.events, grown.head_sequence) == (True, 13, 13)
    assert hashed == [11, 12, 13]
    assert grown == verify_chain(chain.pk)


def _edit_field(tenant: Tenant) -> None:
    with as_attacker() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET action = 'forged' WHERE tenant_id = %s AND sequence = 4",
            [tenant.pk],
        )


def _delete_middle(tenant: Tenant) -> None:
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence = 6", [tenant.pk])


def _delete_tail(tenant: Tenant) -> None:
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence > 7", [tenant.pk])


def _rewrite(tenant: Tenant) -> None:
    _rewrite_from(tenant, 3, "nothing to see here")


def _insert_copy(tenant: Tenant) -> None:
    """A copy of event 2 renumbered 11 and appended: sealed-looking, but a broken link."""
    with as_attacker() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (tenant_id, sequence, occurred_at, actor_type, actor_id,"
            " action, target_type, target_id, changes, correlation_id, prev_hash, hash)"
            " SELECT tenant_id, 11, occurred_at, actor_type, actor_id, action, target_type,"
            f" target_id, changes, correlation_id, prev_hash, hash FROM {TABLE}"
            " WHERE tenant_id = %s AND sequence = 2",
            [tenant.pk],
        )


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        (_edit_field, (False, 4, "hash_mismatch")),
        (_delete_middle, (False, 7, "broken_link")),
        (_delete_tail, (False, 8, "truncated")),
        (_rewrite, (False, 3, "checkpoint_mismatch")),
        (_insert_copy, (False, 11, "hash_mismatch")),
    ],
)
def test_every_attack_after_a_remembered_walk_is_found_as_a_full_walk_finds_it(
    owner: Any, tmp_path: Path, attack: Attack, expected: tuple[bool, int, str]
) -> None:
    tenant = owner.tenant
    for upto in (2, 5, CHAIN_LENGTH):  # exported heads at 2, 5 and 10
        grow_chain(tenant, upto)
        export_checkpoints(directory=tmp_path, url="")
    remembered, _ = _both(tenant, tmp_path)
    assert (remembered.ok, remembered.events) == (True, CHAIN_LENGTH)
    attack(tenant)
    incremental, full = _both(tenant, tmp_path)
    assert incremental == full
    assert (incremental.ok, incremental.first_bad, incremental.reason) == expected


def test_a_checkpoint_exported_later_is_checked_against_the_remembered_prefix(
    chain: Tenant, tmp_path: Path, hashed: list[int]
) -> None:
    """The checkpoint file is read on every call: a head written after the walk that
    disagrees with the stored hash is named without re-hashing the prefix."""
    assert verify_chain_incrementally(chain.pk).ok
    event = AuditEvent.unscoped.get(tenant=chain, sequence=5)
    (tmp_path / f"tenant-{chain.pk}.jsonl").write_text(
        f'{{"tenant_id": {chain.pk}, "sequence": 5, "hash": "{"f" * 64}", "at": "x"}}\n'
    )
    hashed.clear()
    incremental = verify_chain_incrementally(chain.pk, read_checkpoints(chain.pk, tmp_path))
    assert hashed == []
    assert incremental == verify_chain(chain.pk, read_checkpoints(chain.pk, tmp_path))
    assert (incremental.ok, incremental.first_bad, incremental.reason) == (
        False,
        1,
        "checkpoint_mismatch",
    )
    (tmp_path / f"tenant-{chain.pk}.jsonl").write_text(
        f'{{"tenant_id": {chain.pk}, "sequence": 5, "hash": "{event.hash}", "at": "x"}}\n'
    )
    incremental, full = _both(chain, tmp_path)
    assert incremental == full
    assert (incremental.ok, incremental.checkpoint_sequence, incremental.unanchored) == (
        True,
        5,
        CHAIN_LENGTH - 5,
    )


def test_chains_are_remembered_apart(chain: Tenant, owner: Any) -> None:
    """The platform chain and a tenant's are separate walks; tampering one leaves the other."""
    append(tenant_id=None, actor=Actor.system("tests"), action="probe.platform")
    assert verify_chain_incrementally(None).ok
    assert verify_chain_incrementally(chain.pk).ok
    _edit_field(chain)
    assert verify_chain_incrementally(chain.pk).reason == "hash_mismatch"
    platform = verify_chain_incrementally(None)
    assert platform == verify_chain(None)
    assert platform.ok
