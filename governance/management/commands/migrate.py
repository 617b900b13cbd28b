"""``manage.py migrate``, then the app role's grants (governance/roles.py).

Run as the schema's owner (``AGENTFLOW_DB_ROLE=owner``) it provisions ``DATABASE_URL``'s
role right after migrating, so tables a migration added are covered before the app uses
them. Run as the app's own role (a one-role setup without ``DATABASE_OWNER_URL``) it only
migrates, as Django's command does.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError
from django.core.management.commands import migrate

from governance.roles import ProvisionError, needs_provisioning, provision


class Command(migrate.Command):
    help = migrate.Command.help + " Then grant the app's database role what it needs."

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        super().handle(*args, **options)
        if not needs_provisioning(using):
            return
        try:
            done = provision(using)
        except ProvisionError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] >= 1:
            self.stdout.write(f"Provisioned the app's database role: {json.dumps(done)}")
