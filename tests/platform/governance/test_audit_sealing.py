"""Events appended unsealed (the run path, issue 15) join the chain when it is sealed.

``append(seal_now=False)`` is one INSERT without the chain lock; the sealer (beat task,
and every reader first) chains them in id order; the trigger allows exactly that change.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from governance.audit import Actor, append, chain_head, seal_pending
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
