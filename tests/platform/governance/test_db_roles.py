"""The app runs as a database role of its own, which cannot rewrite or empty the audit log.

The test session connects like production (tests/db_roles.py): ``migrate`` ran as the
owner and provisioned ``DATABASE_URL``'s role, and every test uses that role.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from governance.audit import Actor, append
from governance.models import AuditEvent
from governance.roles import ProvisionError, provision, role_state
from tenants.models import Tenant
from tests.db_roles import owner_connection
from tests.platform.governance.conftest import CHAIN_LENGTH

TABLE = AuditEvent._meta.db_table


def _one(query: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchone()[0]


def _refused(statement: str, params: list[Any] | None = None) -> str:
    with pytest.raises(DatabaseError) as refused, transaction.atomic(), connection.cursor() as c:
        c.execute(statement, params or [])
    assert getattr(refused.value.__cause__, "sqlstate", None) == "42501", refused.value
    return str(refused.value)


def test_the_app_connects_as_a_login_role_that_is_neither_superuser_nor_owner(db: None) -> None:
    role = django_settings.APP_DATABASE["USER"]
    assert role
    assert _one("SELECT session_user") == role  # a real login, not SET ROLE
    assert _one("SELECT current_setting('is_superuser')") == "off"
    state = role_state(role)
    assert state is not None
    assert not state.superuser
    assert not state.owns_audit_table
    assert not state.createrole
    assert not state.createdb
    # And it cannot become anyone else: it is a member of no role.
    assert _one("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                "WHERE r.rolname = %s", [role]) == 0  # fmt: skip


def test_the_app_role_cannot_update_delete_or_truncate_audit_rows(chain: Tenant) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses pending FK checks
    for statement in (
        f"UPDATE {TABLE} SET action = 'x' WHERE tenant_id = %s",
        f"DELETE FROM {TABLE} WHERE tenant_id = %s",
    ):
        assert f"permission denied for table {TABLE}" in _refused(statement, [chain.pk])
    assert f"permission denied for table {TABLE}" in _refused(f"TRUNCATE {TABLE}")
    assert "permission denied" in _refused(f"TRUNCATE {TABLE} CASCADE")
    # Nor switch the trigger off, one way or the other.
    assert "must be owner" in _refused(f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL")
    assert "permission denied" in _refused("SET session_replication_role = replica")
    # What it must do still works: append and read.
    append(tenant_id=chain.pk, actor=Actor.system("app"), action="probe.as_app_role")
    assert AuditEvent.unscoped.filter(tenant=chain).count() == CHAIN_LENGTH + 1


def test_no_table_may_be_truncated_and_the_audit_table_only_read_and_appended(db: None) -> None:
    role = django_settings.APP_DATABASE["USER"]
    truncatable = _one(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' "
        "AND has_table_privilege(%s, c.oid, 'TRUNCATE') AND pg_get_userbyid(c.relowner) <> %s",
        [role, role],
    )
    assert truncatable == 0
    audit = {
        privilege: _one("SELECT has_table_privilege(%s, %s, %s)", [role, TABLE, privilege])
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER")
    }
    assert audit == {
        "SELECT": True,
        "INSERT": True,
        "UPDATE": False,
        "DELETE": False,
        "TRUNCATE": False,
        "TRIGGER": False,
    }


@pytest.mark.django_db(transaction=True)
def test_tables_a_later_migration_creates_are_the_apps_to_use(db: None) -> None:
    """Default privileges: the owner's next table needs no new grant to be usable."""
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE governance_probe_later (id bigserial PRIMARY KEY, x int)")
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO governance_probe_later (x) VALUES (1) RETURNING id")
            assert cursor.fetchone()[0] == 1
        assert "permission denied" in _refused("TRUNCATE governance_probe_later")
    finally:
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute("DROP TABLE governance_probe_later")


@pytest.mark.django_db(transaction=True)
def test_provisioning_is_idempotent_and_refuses_a_role_that_could_bypass_the_trigger(
    settings: Any,
) -> None:
    out = StringIO()
    with owner_connection():
        call_command("provision_db", stdout=out)
        call_command("provision_db", stdout=out)  # twice: same grants, no error
        first = json.loads(out.getvalue().splitlines()[0])
        assert first["created"] is False  # the session's migrate created it
        assert first["audit_table"]["granted"] == ["SELECT", "INSERT"]
        superuser = _one("SELECT current_user")
        settings.APP_DATABASE = {**settings.APP_DATABASE, "USER": superuser}
        with pytest.raises(ProvisionError, match="must differ"):
            provision()
    settings.APP_DATABASE = {**settings.APP_DATABASE, "USER": "postgres_like_superuser"}
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute("CREATE ROLE postgres_like_superuser SUPERUSER NOLOGIN")
    try:
        with owner_connection(), pytest.raises(CommandError, match="could disable its trigger"):
            call_command("provision_db")
    finally:
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute("DROP ROLE postgres_like_superuser")
