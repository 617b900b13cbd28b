"""``manage.py audit verify|checkpoint|restrict-role``: the audit log from the shell.

``verify`` prints one JSON object ``{ok, events, first_bad, ...}`` and exits 1 when a chain
is broken, so it can run from cron or CI against production.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from psycopg import sql

from governance.checkpoints import CheckpointExportFailed, export_checkpoints, read_checkpoints
from governance.models import AuditEvent
from governance.roles import SEALING_COLUMNS
from governance.verify import Verification, verify_chain
from tenants.models import Tenant

_ROLE_SQL = """
SELECT r.rolsuper, c.relowner = r.oid,
       current_setting('is_superuser') = 'on' OR pg_has_role(c.relowner, 'USAGE')
FROM pg_roles r, pg_class c
WHERE r.rolname = %s AND c.oid = 'governance_auditevent'::regclass
"""


class Command(BaseCommand):
    help = "Verify audit chains, export their checkpoints, lock the audit table for a role."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="walk the chains; exit 1 when one is broken")
        verify.add_argument("--tenant", help="tenant slug (default: every chain)")
        verify.add_argument(
            "--checkpoints", type=Path, help="directory of exported checkpoints (default: setting)"
        )
        checkpoint = sub.add_parser("checkpoint", help="export chain heads now")
        checkpoint.add_argument("--force", action="store_true", help="also unchanged chains")
        restrict = sub.add_parser(
            "restrict-role", help="revoke UPDATE/DELETE/TRUNCATE on the audit table from a role"
        )
        restrict.add_argument("role")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "verify":
            result = self._verify(options["tenant"], options["checkpoints"])
            self.stdout.write(json.dumps(result))
            if not result["ok"]:
                sys.exit(1)
        elif action == "checkpoint":
            try:
                exported = export_checkpoints(force=options["force"])
            except CheckpointExportFailed as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(json.dumps({"exported": [c.as_json() for c in exported]}))
        else:
            self.stdout.write(json.dumps(self._restrict(options["role"])))

    def _verify(self, slug: str | None, directory: Path | None) -> dict[str, Any]:
        if slug is not None:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is None:
                raise CommandError(f"no tenant {slug!r}")
            chains: list[tuple[int | None, str]] = [(tenant.pk, tenant.slug)]
        else:
            chains = [(None, "platform"), *Tenant.objects.order_by("pk").values_list("pk", "slug")]
        total, checked, unanchored = 0, 0, 0
        for tenant_id, name in chains:
            try:
                exported = read_checkpoints(tenant_id, directory)
            except ValueError as exc:
                raise CommandError(f"checkpoints of {name}: {exc}") from exc
            result: Verification = verify_chain(tenant_id, exported)
            total += result.events
            unanchored += result.unanchored
            checked += 1
            if not result.ok:
                return {**result.as_json(), "events": total, "chain": name, "chains": checked}
        return {
            "ok": True,
            "events": total,
            "first_bad": None,
            "chain": None,
            "chains": checked,
            "unanchored": unanchored,  # events no exported head covers yet (all chains)
        }

    def _restrict(self, role: str) -> dict[str, Any]:
        with connection.cursor() as cursor:
            cursor.execute(_ROLE_SQL, [role])
            row = cursor.fetchone()
        if row is None:
            raise CommandError(f"no database role {role!r} (or the audit table is not migrated)")
        if row[0] or row[1]:
            raise CommandError(
                f"{role!r} is a superuser or owns the audit table and could disable its "
                "trigger: run the app as a role of its own"
            )
        if not row[2]:
            # PostgreSQL only warns when a non-owner grants or revokes: say it, not "done".
            raise CommandError("run this as the audit table's owner (AGENTFLOW_DB_ROLE=owner)")
        table = sql.Identifier(AuditEvent._meta.db_table)
        sequence = sql.Identifier(f"{AuditEvent._meta.db_table}_id_seq")
        grantee = sql.Identifier(role)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {} FROM {}"
                ).format(table, grantee)
            )
            cursor.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(table, grantee))
            # Sealing appended events: these columns only (the trigger guards the rest).
            cursor.execute(
                sql.SQL("GRANT UPDATE ({}) ON {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in SEALING_COLUMNS), table, grantee
                )
            )
            cursor.execute(
                sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(sequence, grantee)
            )
        return {
            "role": role,
            "table": AuditEvent._meta.db_table,
            "granted": ["SELECT", "INSERT"],
            "sealing": f"UPDATE ({', '.join(SEALING_COLUMNS)})",
            "revoked": ["UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"],
        }
