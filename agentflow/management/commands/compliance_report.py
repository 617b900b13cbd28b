"""``manage.py compliance_report --tenant SLUG --since ISO --until ISO [--format json|csv]``.

A period's compliance findings of one tenant (what its compliance_auditor_agent runs wrote
to the audit log), with summary counts, as JSON or as CSV rows, on stdout.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentflow.blueprints.compliance_auditor import compliance_report, report_csv
from tenants.context import tenant_scope
from tenants.models import Tenant


def _moment(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--{name}: not an ISO 8601 date or time: {value!r}") from None
    if moment.tzinfo is None:
        raise CommandError(f"--{name}: give a timezone (e.g. 2026-11-01T00:00:00Z)")
    return moment


class Command(BaseCommand):
    help = "Print a tenant's compliance findings of a period (JSON or CSV)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--since", required=True, help="ISO 8601 start (inclusive)")
        parser.add_argument("--until", required=True, help="ISO 8601 end (exclusive)")
        parser.add_argument("--format", choices=("json", "csv"), default="json")

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = _moment(options["since"], "since"), _moment(options["until"], "until")
        if since >= until:
            raise CommandError("--until: must be after --since")
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"--tenant: no tenant {options['tenant']!r}")
        with tenant_scope(tenant.pk):
            report = compliance_report(tenant.pk, since, until)
        if options["format"] == "csv":
            self.stdout.write(report_csv(report), ending="")
        else:
            self.stdout.write(json.dumps(report, indent=2))
