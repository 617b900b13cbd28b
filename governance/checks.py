"""``manage.py check --database default``: is the audit table append-only for this role?"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import connections

_ROLE_SQL = """
SELECT r.rolsuper, c.relowner = r.oid
FROM pg_roles r, pg_class c
WHERE r.rolname = current_user AND c.oid = to_regclass('governance_auditevent')
"""


@register(Tags.database)
def audit_role_check(databases: Any = None, **_: Any) -> list[CheckMessage]:
    """The trigger stops UPDATE/DELETE for every role, but a superuser or the table's
    owner can switch it off; in production the app should connect as neither.

    Production only: ``migrate`` runs database checks too, and under ``make run`` the
    embedded server's superuser is expected, so the warning would be noise there.
    """
    messages: list[CheckMessage] = []
    if not settings.PRODUCTION:
        return messages
    for alias in databases or []:
        with connections[alias].cursor() as cursor:
            cursor.execute(_ROLE_SQL)
            row = cursor.fetchone()
        if row is None:
            continue  # not migrated yet
        superuser, owner = row
        if superuser or owner:
            messages.append(
                CheckWarning(
                    "The database role can disable the audit log's append-only trigger "
                    f"({'superuser' if superuser else 'owner of governance_auditevent'}).",
                    hint="Connect the app as a role of its own and run "
                    "`manage.py audit restrict-role <role>` (docs/operations.md).",
                    id="governance.W001",
                )
            )
    return messages
