"""Events appended unsealed (the run path, issue 15) join the chain when it is sealed.

``append(seal_now=False)`` is one INSERT without the chain lock; the sealer (beat task,
and every reader first) chains them in id order; the trigger allows exactly that change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from governance.audit import Actor, append, batched_appends, chain_head, seal_pending
from governance.models import AuditEvent
from governance.tasks import audit_seal
from governance.verify import verify_chain
from tenants.models import Tenant
from tests.platform.governance.conftest import CHAIN_LENGTH

TABLE = AuditEvent._meta.db_table
ACTOR = Actor.system("tests")


def _unsealed(tenant: Tenant, n: int) -> list[AuditEvent]:
    return [
        append(
            tenant_id=tenant.pk,
            actor=ACTOR,
            action="probe.unsealed",
            target_id=i,
            changes={"i": i},
            seal_now=False,
        )
        for i in range(n)
    ]


def _refused(statement: str, params: list[Any]) -> str:
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as c:
        c.execute(statement, params)
    return str(refused.value)


def test_an_unsealed_append_is_one_insert_and_the_sealer_chains_it(chain: Tenant) -> None:
    events = _unsealed(chain, 3)
    assert all(e.sequence is None and e.hash == "" for e in events)
    assert chain_head(chain.pk)["sequence"] == CHAIN_LENGTH  # type: ignore[index]
    assert audit_seal() == 3
    sealed = list(AuditEvent.unscoped.filter(pk__in=[e.pk for e in events]).order_by("id"))
    assert [e.sequence for e in sealed] == [CHAIN_LENGTH + 1, CHAIN_LENGTH + 2, CHAIN_LENGTH + 3]
    assert verify_chain(chain.pk).ok
    assert seal_pending() == 0  # nothing left


def test_a_sealed_append_chains_the_unsealed_ones_before_it(chain: Tenant) -> None:
    _unsealed(chain, 2)
    event = append(tenant_id=chain.pk, actor=ACTOR, action="probe.sealed")
    assert event.sequence == CHAIN_LENGTH + 3
    assert not AuditEvent.unscoped.filter(tenant=chain, sequence__isnull=True).exists()
    result = verify_chain(chain.pk)
    assert result.ok
    assert result.events == CHAIN_LENGTH + 3


def test_verify_seals_first_so_an_unsealed_tail_is_verified(chain: Tenant) -> None:
    _unsealed(chain, 4)
    result = verify_chain(chain.pk)
    assert result.ok
    assert result.events == CHAIN_LENGTH + 4


def test_the_trigger_allows_sealing_only_once_and_only_the_seal(chain: Tenant) -> None:
    (event,) = _unsealed(chain, 1)
    # Sealing must not change what was recorded...
    refused = _refused(
        f"UPDATE {TABLE} SET sequence = 99, prev_hash = 'x', hash = 'y', target_id = 'z' "
        "WHERE id = %s",
        [event.pk],
    )
    assert "append-only" in refused or "permission denied" in refused
    # ...and a sealed event can never be sealed again.
    seal_pending()
    refused = _refused(f"UPDATE {TABLE} SET hash = 'forged' WHERE id = %s", [event.pk])
    assert "append-only" in refused
    assert verify_chain(chain.pk).ok


def test_unsealed_appends_store_what_was_appended_in_the_order_appended(chain: Tenant) -> None:
    """The unsealed INSERT (one event, or a batch in one statement): ids in append order,
    every recorded field as appended (changes canonicalised), then sealed and verified."""
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    (single,) = _unsealed(chain, 1)
    with transaction.atomic(), batched_appends():
        batch = [
            append(
                tenant_id=chain.pk,
                actor=Actor("api_key", f"k{i}"),
                action="probe.batched",
                target_type="run",
                target_id=f"r{i}",
                changes={"at": when, "usd": Decimal("0.25"), "i": i},
                seal_now=False,
            )
            for i in range(3)
        ]
    ids = [single.pk, *(event.pk for event in batch)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    stored = list(AuditEvent.unscoped.filter(pk__in=ids).order_by("id"))
    assert [(e.actor_id, e.target_type, e.target_id) for e in stored[1:]] == [
        ("k0", "run", "r0"), ("k1", "run", "r1"), ("k2", "run", "r2")
    ]  # fmt: skip
    assert stored[1].changes == {"at": when.isoformat(), "usd": "0.25", "i": 0}
    assert stored[1].changes == batch[0].changes
    assert all(e.sequence is None and e.hash == e.prev_hash == "" for e in stored)
    assert all(e.occurred_at == b.occurred_at for e, b in zip(stored[1:], batch, strict=True))
    assert audit_seal() == 4
    assert verify_chain(chain.pk).ok
