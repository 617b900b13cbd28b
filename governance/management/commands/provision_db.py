"""``manage.py provision_db``: create and grant the app's database role, as the owner.

``migrate`` does this too; this command alone is for an operator changing the role's
password, or checking a database migrated before roles were split. Prints JSON.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.roles import ProvisionError, provision


class Command(BaseCommand):
    help = "Create DATABASE_URL's role and grant it the app's rights (run as the owner)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default", help="database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            done = provision(options["database"])
        except ProvisionError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(done))
