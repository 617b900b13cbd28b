"""The audit chain under attack: every kind of tampering is found and the first bad event named.

The attacker has full database access (a superuser that switches triggers off with
``session_replication_role = replica``; the tests themselves run as the app's own role,
see tests/db_roles.py); the chain of the ``chain`` fixture has
``CHAIN_LENGTH`` events, sequence 1 (tenant.created) to 10.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from io import StringIO
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.utils import DatabaseError

from governance.audit import GENESIS, Actor, append, compute_hash
from governance.checkpoints import export_checkpoints, read_checkpoints
from governance.models import AuditEvent
from governance.verify import verify_chain
from tenants.models import Tenant
from tests.db_roles import owner_connection
from tests.platform.api.conftest import Persona
from tests.platform.governance.conftest import CHAIN_LENGTH, as_attacker, grow_chain

TABLE = "governance_auditevent"


def _verify(tenant: Tenant, directory: Path | None = None) -> Any:
    return verify_chain(tenant.pk, read_checkpoints(tenant.pk, directory) if directory else ())


def _payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": row["tenant_id"],
        "sequence": row["sequence"],
        "occurred_at": row["occurred_at"].astimezone(UTC).isoformat(),
        "actor_type": row["actor_type"],
        "actor_id": row["actor_id"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "changes": row["changes"],
        "correlation_id": row["correlation_id"],
    }


def _shift(cursor: Any, tenant: Tenant, from_sequence: int, by: int) -> None:
    """Renumber events >= from_sequence (two steps: the unique index checks every row)."""
    cursor.execute(
        f"UPDATE {TABLE} SET sequence = sequence + 1000000 WHERE tenant_id = %s AND sequence >= %s",
        [tenant.pk, from_sequence],
    )
    cursor.execute(
        f"UPDATE {TABLE} SET sequence = sequence - 1000000 + %s WHERE tenant_id = %s "
        "AND sequence >= 1000000",
        [by, tenant.pk],
    )


def test_an_untouched_chain_verifies(chain: Tenant) -> None:
    result = _verify(chain)
    assert result.ok, result
    assert result.events == CHAIN_LENGTH
    assert result.first_bad is None
    assert result.head_sequence == CHAIN_LENGTH
    head = AuditEvent.unscoped.get(tenant=chain, sequence=CHAIN_LENGTH)
    assert result.head_hash == head.hash


def test_hashes_cover_the_canonical_json_and_the_previous_hash(chain: Tenant) -> None:
    events = list(AuditEvent.unscoped.filter(tenant=chain).order_by("sequence").values())
    assert events[0]["prev_hash"] == GENESIS
    for earlier, later in pairwise(events):
        assert later["prev_hash"] == earlier["hash"]
        assert later["hash"] == compute_hash(earlier["hash"], _payload(later))


@pytest.mark.parametrize("k", [1, 5, CHAIN_LENGTH])
def test_one_flipped_byte_in_event_k_names_k(chain: Tenant, k: int) -> None:
    with as_attacker() as cursor:
        if k == 1:  # tenant.created: one byte of its action, "tenant..." -> "Tenant..."
            cursor.execute(
                f"UPDATE {TABLE} SET action = overlay(action placing 'T' from 1 for 1) "
                "WHERE tenant_id = %s AND sequence = 1",
                [chain.pk],
            )
        else:  # one byte of the change record: "event 5" -> "Event 5"
            cursor.execute(
                f"UPDATE {TABLE} SET changes = jsonb_set(changes, '{{note}}', "
                "to_jsonb(overlay(changes->>'note' placing 'E' from 1 for 1))) "
                "WHERE tenant_id = %s AND sequence = %s",
                [chain.pk, k],
            )
    result = _verify(chain)
    assert (result.ok, result.first_bad, result.reason) == (False, k, "hash_mismatch")


@pytest.mark.parametrize("k", [1, 4, CHAIN_LENGTH - 1])
def test_deleting_event_k_names_k_plus_1(chain: Tenant, k: int) -> None:
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence = %s", [chain.pk, k])
    result = _verify(chain)
    assert (result.ok, result.first_bad, result.reason) == (False, k + 1, "broken_link")


def test_deleting_and_renumbering_is_still_found(chain: Tenant) -> None:
    """A careful attacker closes the gap: the renumbered event's hash no longer fits."""
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence = 4", [chain.pk])
        _shift(cursor, chain, 5, -1)
    result = _verify(chain)
    assert (result.ok, result.first_bad) == (False, 4)


def test_swapping_two_events_names_the_first_position(chain: Tenant) -> None:
    with as_attacker() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET sequence = 999999 WHERE tenant_id = %s AND sequence = 6",
            [chain.pk],
        )
        cursor.execute(
            f"UPDATE {TABLE} SET sequence = 6 WHERE tenant_id = %s AND sequence = 7", [chain.pk]
        )
        cursor.execute(
            f"UPDATE {TABLE} SET sequence = 7 WHERE tenant_id = %s AND sequence = 999999",
            [chain.pk],
        )
    result = _verify(chain)
    assert (result.ok, result.first_bad, result.reason) == (False, 6, "hash_mismatch")


def _forge(tenant: Tenant, sequence: int, prev_hash: str, *, honest_hash: bool) -> None:
    row = {
        "tenant_id": tenant.pk,
        "sequence": sequence,
        "occurred_at": datetime.now(UTC),
        "actor_type": "user",
        "actor_id": "1",
        "action": "api_key.issued",
        "target_type": "api_key",
        "target_id": "af_forged",
        "changes": {"name": "backdoor"},
        "correlation_id": "",
    }
    digest = compute_hash(prev_hash, _payload(row)) if honest_hash else "f" * 64
    with as_attacker() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (tenant_id, sequence, occurred_at, actor_type, actor_id, "
            "action, target_type, target_id, changes, correlation_id, prev_hash, hash) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [*list(row.values())[:8], json.dumps(row["changes"]), "", prev_hash, digest],
        )


def test_an_event_inserted_in_the_middle_is_found(chain: Tenant) -> None:
    """The forged event links to event 4 with a correct hash; the event after it (the old
    5, renumbered to make room) no longer fits and is named."""
    with as_attacker() as cursor:
        _shift(cursor, chain, 5, +1)
    prev = AuditEvent.unscoped.get(tenant=chain, sequence=4).hash
    _forge(chain, 5, prev, honest_hash=True)
    result = _verify(chain)
    assert (result.ok, result.first_bad) == (False, 6)
    assert result.events == 6


def test_an_inserted_event_with_a_made_up_hash_is_named_itself(chain: Tenant) -> None:
    with as_attacker() as cursor:
        _shift(cursor, chain, 5, +1)
    _forge(chain, 5, "0" * 64, honest_hash=False)
    result = _verify(chain)
    assert (result.ok, result.first_bad, result.reason) == (False, 5, "hash_mismatch")


def test_a_truncated_tail_is_found_against_the_exported_checkpoint(
    chain: Tenant, tmp_path: Path
) -> None:
    """Cutting the last events off leaves a valid shorter chain: only the checkpoint taken
    before the cut tells, naming the first missing event."""
    export_checkpoints(directory=tmp_path, url="")
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence > 7", [chain.pk])
    assert _verify(chain).ok  # the chain alone cannot know
    result = _verify(chain, tmp_path)
    assert (result.ok, result.first_bad, result.reason) == (False, 8, "truncated")
    assert result.checkpoint_sequence == CHAIN_LENGTH


def _rewrite_from(tenant: Tenant, k: int, note: str) -> None:
    """Change event k and recompute every hash from k on: an internally valid forgery."""
    rows = list(AuditEvent.unscoped.filter(tenant=tenant).order_by("sequence").values())
    prev = rows[k - 2]["hash"] if k > 1 else GENESIS
    with as_attacker() as cursor:
        for row in rows[k - 1 :]:
            if row["sequence"] == k:
                row["changes"] = {**row["changes"], "note": note}
            digest = compute_hash(prev, _payload(row))
            cursor.execute(
                f"UPDATE {TABLE} SET changes = %s, prev_hash = %s, hash = %s WHERE id = %s",
                [json.dumps(row["changes"]), prev, digest, row["id"]],
            )
            prev = digest


def test_a_consistently_rewritten_chain_is_found_against_checkpoints(
    owner: Persona, tmp_path: Path
) -> None:
    """Heads exported at 2, 5 and 10; the attacker edits event 3 and recomputes every later
    hash. The chain alone is valid; the checkpoint at 5 disagrees while the one at 2 still
    agrees, so the first event that can be bad is 3."""
    tenant = owner.tenant
    for upto in (2, 5, CHAIN_LENGTH):
        grow_chain(tenant, upto)
        export_checkpoints(directory=tmp_path, url="")
    assert [c.sequence for c in read_checkpoints(tenant.pk, tmp_path)] == [2, 5, CHAIN_LENGTH]
    _rewrite_from(tenant, 3, "nothing to see here")
    assert verify_chain(tenant.pk).ok
    result = _verify(tenant, tmp_path)
    assert (result.ok, result.first_bad, result.reason) == (False, 3, "checkpoint_mismatch")


def test_checkpoints_only_record_chains_that_moved(chain: Tenant, tmp_path: Path) -> None:
    first = export_checkpoints(directory=tmp_path, url="")
    assert {c.tenant_id for c in first} >= {chain.pk}
    assert export_checkpoints(directory=tmp_path, url="") == []  # nothing moved
    append(tenant_id=chain.pk, actor=Actor.system("tests"), action="probe.more")
    again = export_checkpoints(directory=tmp_path, url="")
    assert [(c.tenant_id, c.sequence) for c in again] == [(chain.pk, CHAIN_LENGTH + 1)]
    lines = (tmp_path / f"tenant-{chain.pk}.jsonl").read_text().splitlines()
    assert [json.loads(line)["sequence"] for line in lines] == [CHAIN_LENGTH, CHAIN_LENGTH + 1]
    assert json.loads(lines[-1])["tenant"] == chain.slug


def test_verify_command_prints_one_json_object_and_exits_1_when_broken(chain: Tenant) -> None:
    out = StringIO()
    call_command("audit", "verify", "--tenant", chain.slug, stdout=out)
    assert json.loads(out.getvalue()) == {
        "ok": True,
        "events": CHAIN_LENGTH,
        "first_bad": None,
        "chain": None,
        "chains": 1,
        "unanchored": CHAIN_LENGTH,  # no checkpoint exported yet
    }
    with as_attacker() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence = 3", [chain.pk])
    out = StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("audit", "verify", "--tenant", chain.slug, stdout=out)
    assert exited.value.code == 1
    report = json.loads(out.getvalue())
    assert (report["ok"], report["first_bad"], report["chain"]) == (False, 4, chain.slug)
    assert report["reason"] == "broken_link"


def test_verify_command_without_tenant_walks_every_chain(chain: Tenant, outsider: Persona) -> None:
    out = StringIO()
    call_command("audit", "verify", stdout=out)
    report = json.loads(out.getvalue())
    assert report["ok"] is True
    assert report["chains"] == Tenant.objects.count() + 1  # and the platform chain
    total = AuditEvent.unscoped.count()
    assert report["events"] == total
    with as_attacker() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET target_id = 'x' WHERE tenant_id = %s AND sequence = 1",
            [outsider.tenant.pk],
        )
    with pytest.raises(SystemExit):
        call_command("audit", "verify", stdout=(out := StringIO()))
    report = json.loads(out.getvalue())
    assert (report["chain"], report["first_bad"]) == (outsider.tenant.slug, 1)


def test_verify_command_refuses_an_unknown_tenant(db: None) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no tenant"):
        call_command("audit", "verify", "--tenant", "nope")


# --- the database refuses changes ------------------------------------------------------------


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "sqlstate", None)


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET action = 'x' WHERE tenant_id = %s",
        f"UPDATE {TABLE} SET changes = '{{}}' WHERE tenant_id = %s AND sequence = 1",
        f"DELETE FROM {TABLE} WHERE tenant_id = %s",
        f"DELETE FROM {TABLE} WHERE tenant_id = %s AND sequence = 10",
    ],
)
def test_raw_update_and_delete_are_permission_denied(chain: Tenant, statement: str) -> None:
    """The app's role the tests connect as: only switching the trigger off gets past."""
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as c:
        c.execute(statement, [chain.pk])
    assert "permission denied" in str(refused.value)
    assert _sqlstate(refused.value) == "42501"  # insufficient_privilege
    assert AuditEvent.unscoped.filter(tenant=chain).count() == CHAIN_LENGTH
    assert _verify(chain).ok


def test_the_orm_cannot_change_or_delete_events_either(chain: Tenant) -> None:
    event = AuditEvent.unscoped.get(tenant=chain, sequence=3)
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        AuditEvent.unscoped.filter(pk=event.pk).update(action="rewritten")
    with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
        event.delete()
    assert AuditEvent.unscoped.filter(tenant=chain).count() == CHAIN_LENGTH


def _create_role(cursor: Any, role: str) -> None:
    """A role that owns nothing and holds every table privilege, the session a member."""
    cursor.execute(f"CREATE ROLE {role} NOLOGIN")
    everything = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE"
    cursor.execute(f"GRANT {everything} ON ALL TABLES IN SCHEMA public TO {role}")
    cursor.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    cursor.execute(f"GRANT {role} TO SESSION_USER")  # so that the test may SET ROLE


@pytest.fixture
def app_role(chain: Tenant) -> str:
    """A role like a production app's: owns nothing, may read and write every table."""
    role = "agentflow_app_test"
    with as_attacker() as cursor:  # only the superuser may create roles
        _create_role(cursor, role)
    # Created inside the test's transaction: rolled back with it.
    return role


@pytest.fixture
def committed_role(transactional_db: None) -> Iterator[str]:
    """The same role, committed: for commands that must run as the owner's connection."""
    role = "agentflow_app_test"
    app_user = connection.settings_dict["USER"]
    with owner_connection(), connection.cursor() as cursor:
        _create_role(cursor, role)
        cursor.execute(f'GRANT {role} TO "{app_user}"')
    yield role
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


@contextmanager
def acting_as(role: str) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {role}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def _refused(statement: str, params: list[Any]) -> str:
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as c:
        c.execute(statement, params)
    assert _sqlstate(refused.value) in {"42501", "55000"}, refused.value
    return str(refused.value)


def test_the_trigger_stops_a_role_that_holds_every_privilege(chain: Tenant, app_role: str) -> None:
    """Granted UPDATE, DELETE and TRUNCATE on the table, the role is still refused."""
    with connection.cursor() as cursor:
        # Settle the deferred FK checks of the inserts above (TRUNCATE refuses pending ones).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with acting_as(app_role):
        for statement, params in (
            (f"UPDATE {TABLE} SET action = 'x' WHERE tenant_id = %s", [chain.pk]),
            (f"DELETE FROM {TABLE} WHERE tenant_id = %s", [chain.pk]),
            (f"TRUNCATE {TABLE}", []),
        ):
            assert "audit events are append-only" in _refused(statement, params)
    assert _verify(chain).ok


def test_restrict_role_revokes_the_privileges_and_the_role_still_appends(
    owner: Persona, committed_role: str
) -> None:
    app_role = committed_role
    chain = owner.tenant
    grow_chain(chain)
    out = StringIO()
    with owner_connection():  # only the table's owner can grant and revoke
        call_command("audit", "restrict-role", app_role, stdout=out)
    assert json.loads(out.getvalue())["revoked"] == [
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ]
    with acting_as(app_role):
        for statement in (
            f"UPDATE {TABLE} SET action = 'x' WHERE tenant_id = %s",
            f"DELETE FROM {TABLE} WHERE tenant_id = %s",
        ):
            assert "permission denied for table" in _refused(statement, [chain.pk])
        assert "permission denied for table" in _refused(f"TRUNCATE {TABLE}", [])
        # Neither can it switch the trigger off, one way or the other.
        assert "must be owner" in _refused(f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL", [])
        assert "permission denied" in _refused("SET session_replication_role = replica", [])
        append(tenant_id=chain.pk, actor=Actor.system("app"), action="probe.as_app_role")
    assert _verify(chain).events == CHAIN_LENGTH + 1


@pytest.mark.django_db(transaction=True)
def test_restrict_role_refuses_a_role_that_could_bypass_the_trigger() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="run this as the audit table's owner"):
        call_command("audit", "restrict-role", connection.settings_dict["USER"])
    with owner_connection():
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            (superuser,) = cursor.fetchone()
        with pytest.raises(CommandError, match="superuser or owns"):
            call_command("audit", "restrict-role", superuser)
        with pytest.raises(CommandError, match="no database role"):
            call_command("audit", "restrict-role", "no_such_role_anywhere")


@pytest.mark.django_db(transaction=True)
def test_the_database_check_warns_when_the_app_could_bypass_the_trigger(settings: Any) -> None:
    from governance.checks import audit_role_check

    settings.PRODUCTION = True
    assert audit_role_check(databases=["default"]) == []  # the app's own role the tests use
    with owner_connection():
        warnings = audit_role_check(databases=["default"])  # the embedded superuser
    assert [w.id for w in warnings] == ["governance.W001"]
