"""The database roles: the schema's owner migrates, the application runs as a role of its own.

The audit table's trigger refuses UPDATE and DELETE for every role, but a superuser or
the table's owner can switch it off (and a superuser may TRUNCATE). So the application
connects as a LOGIN role that is neither (``DATABASE_URL``), and ``migrate`` runs as the
owner (``AGENTFLOW_DB_ROLE=owner`` with ``DATABASE_OWNER_URL``) and then provisions that
role here: read and write on every table, on the audit table only SELECT and INSERT, no
TRUNCATE anywhere. Idempotent: it runs after every ``migrate`` (and ``provision_db``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connections, transaction
from psycopg import sql

from governance.models import AuditEvent

# Tables with per-tenant HNSW indexes built at run time (learning.ensure_vector_indexes):
# CREATE INDEX needs the table's owner and CREATE on its schema, so the app role owns
# these two tables (nothing else) and may create in the schema. It still cannot touch
# the audit table, whose owner stays the migrating role.
APP_OWNED_MODELS = ("learning.GoldenPath", "agentflow.KnowledgeChunk")
_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# What sealing an audit event writes (the trigger refuses any other change).
SEALING_COLUMNS = ("sequence", "prev_hash", "hash")
_SEALING_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in SEALING_COLUMNS)
_SEQUENCE_PRIVILEGES = "USAGE, SELECT, UPDATE"
_ROLE_SQL = """
SELECT r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,
       c.relowner = r.oid AS owns_audit
FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass(%s)
WHERE r.rolname = %s
"""


class ProvisionError(RuntimeError):
    """The app role cannot be made safe from this connection; nothing was changed."""


@dataclass(frozen=True)
class RoleState:
    role: str
    superuser: bool
    createrole: bool
    createdb: bool
    bypassrls: bool
    owns_audit_table: bool

    @property
    def can_bypass_audit(self) -> bool:
        return self.superuser or self.owns_audit_table

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def app_role() -> tuple[str, str]:
    """(name, password) of the app's role, from ``DATABASE_URL``."""
    config = settings.APP_DATABASE
    return str(config["USER"]), str(config["PASSWORD"] or "")


def role_state(role: str, using: str = "default") -> RoleState | None:
    with connections[using].cursor() as cursor:
        cursor.execute(_ROLE_SQL, [AuditEvent._meta.db_table, role])
        row = cursor.fetchone()
    return None if row is None else RoleState(role, *(bool(value) for value in row))


def _current_user(using: str) -> tuple[str, bool]:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_user, current_setting('is_superuser') = 'on'")
        name, superuser = cursor.fetchone()
    return str(name), bool(superuser)


def needs_provisioning(using: str = "default") -> bool:
    """Does this connection run as someone other than the app's role (the owner)?"""
    role, _ = app_role()
    return bool(role) and _current_user(using)[0] != role


def provision(using: str = "default") -> dict[str, Any]:
    """Create or update the app role and its grants, as the owner on ``using``.

    The app may connect, use the schema, read and write every table and sequence (also
    those later migrations create, through default privileges), owns the vector tables,
    and on the audit table may only SELECT and INSERT.
    """
    role, password = app_role()
    owner, owner_is_superuser = _current_user(using)
    if not role or role == owner:
        raise ProvisionError(
            f"the app role ({role or 'DATABASE_URL has no user'}) must differ from the role "
            f"migrating ({owner}): set DATABASE_OWNER_URL and AGENTFLOW_DB_ROLE=owner"
        )
    state = role_state(role, using)
    if state is not None and (state.superuser or state.owns_audit_table):
        raise ProvisionError(
            f"{role!r} is a superuser or owns the audit table and could disable its trigger: "
            "give the app a role of its own"
        )
    name = sql.Identifier(role)
    audit = sql.Identifier(AuditEvent._meta.db_table)
    statements: list[sql.Composable] = []
    attributes = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
    if state is None:
        statements.append(sql.SQL("CREATE ROLE {} {}").format(name, attributes))
    elif state.createrole or state.createdb or state.bypassrls:
        statements.append(sql.SQL("ALTER ROLE {} {}").format(name, attributes))
    if password:
        statements.append(sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(password)))
    if not owner_is_superuser:
        # Migrations must still alter the tables the app owns: the owner joins its role.
        statements.append(sql.SQL("GRANT {} TO CURRENT_USER").format(name))
    statements += [
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
            sql.Identifier(connections[using].settings_dict["NAME"]), name
        ),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name),
        sql.SQL(f"GRANT {_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {{}}").format(name),
        sql.SQL(f"GRANT {_SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA public TO {{}}").format(
            name
        ),
        sql.SQL(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {_TABLE_PRIVILEGES} ON TABLES TO {{}}"
        ).format(name),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            f"GRANT {_SEQUENCE_PRIVILEGES} ON SEQUENCES TO {{}}"
        ).format(name),
        # The audit table: append and read, nothing else (the trigger stays the backstop).
        sql.SQL("REVOKE ALL ON {} FROM {}").format(audit, name),
        sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(audit, name),
        # Sealing an appended event (governance.audit.seal_chain): these columns only, and
        # the trigger allows it once per unsealed row, every recorded field unchanged.
        sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(_SEALING_COLUMNS, audit, name),
    ]
    owned = [apps.get_model(label)._meta.db_table for label in APP_OWNED_MODELS]
    # CREATE INDEX also needs CREATE on the table's schema (and so does taking ownership).
    statements.append(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(name))
    statements += [
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), name) for table in owned
    ]
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return {
        "role": role,
        "owner": owner,
        "created": state is None,
        "audit_table": {
            "granted": ["SELECT", "INSERT"],
            "sealing": f"UPDATE ({', '.join(SEALING_COLUMNS)})",
            "table": AuditEvent._meta.db_table,
        },
        "owns": owned,
    }
