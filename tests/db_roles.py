"""The test session runs the app as its own database role, like production.

``DATABASE_URL`` names the app's LOGIN role (neither superuser nor owner of the audit
table) and ``DATABASE_OWNER_URL`` the schema's owner (the embedded server's superuser).
The test database is created and migrated as the owner (``migrate`` then provisions the
app role), then every test connects as the app role. Only what the app never does runs
as the owner: emptying the tables after a transactional test (TRUNCATE), dropping the
test database, and the attacker of the tamper tests (:func:`as_superuser`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, connections

# Created in the test database only, by the owner: what full database access allows,
# reachable from the app's connection inside the test's own transaction.
SUPERUSER_FUNCTION = "agentflow_test_superuser"
_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {SUPERUSER_FUNCTION}(statement text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET session_replication_role = replica AS $$
BEGIN
    EXECUTE statement;
END;
$$;
REVOKE ALL ON FUNCTION {SUPERUSER_FUNCTION}(text) FROM PUBLIC;
"""
_CREDENTIALS = ("USER", "PASSWORD", "HOST", "PORT")


def split_roles() -> bool:
    """Is there an owner besides the app's role (else one role does everything)?"""
    return bool(settings.DATABASE_OWNER_URL)


def _owner_config() -> dict[str, Any]:
    from agentflow.server.urls_parse import database_config

    return database_config(str(settings.DATABASE_OWNER_URL))


def _connect_as(config: dict[str, Any]) -> None:
    """Point the default alias at another role: the next query opens a new connection."""
    wrapper = connections["default"]
    wrapper.close()
    if wrapper.settings_dict.get("OPTIONS", {}).get("pool"):
        # The pool is shared by every thread and keeps its credentials: start a new one.
        wrapper.close_pool()  # type: ignore[attr-defined]
    for key in _CREDENTIALS:
        wrapper.settings_dict[key] = config[key]


def use_owner() -> None:
    if split_roles():
        _connect_as(_owner_config())


def use_app() -> None:
    if split_roles():
        _connect_as(settings.APP_DATABASE)


@contextmanager
def owner_connection() -> Iterator[None]:
    """The default connection as the schema's owner; outside any test transaction only."""
    use_owner()
    try:
        yield
    finally:
        use_app()


def install_superuser_function() -> None:
    """As the owner, right after the test database is migrated."""
    if not split_roles():
        return
    from governance.roles import app_role

    with connection.cursor() as cursor:
        cursor.execute(_FUNCTION_SQL)
        cursor.execute(f'GRANT EXECUTE ON FUNCTION {SUPERUSER_FUNCTION}(text) TO "{app_role()[0]}"')


class _SuperuserCursor:
    """Runs each statement as the superuser with triggers off, in the caller's transaction."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, statement: str, params: Any = None) -> None:
        rendered = connection.ops.compose_sql(statement, params)
        self._cursor.execute(f"SELECT {SUPERUSER_FUNCTION}(%s)", [rendered])


@contextmanager
def as_superuser() -> Iterator[Any]:
    """A cursor with full database access and triggers switched off: the attacker."""
    with connection.cursor() as cursor:
        if split_roles():
            yield _SuperuserCursor(cursor)
            return
        # One role for everything (an external DATABASE_URL): it must be a superuser.
        cursor.execute("SET session_replication_role = replica")
        try:
            yield cursor
        finally:
            cursor.execute("SET session_replication_role = origin")
