"""Operators' scripts: ``manage.py tenants create NAME --tier TIER`` and ``tenants key NAME``.

Each prints one JSON object; the API key appears only in this output.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from governance.audit import Actor
from tenants import services
from tenants.models import Tenant
from tenants.quotas import Tier


class Command(BaseCommand):
    help = "Create tenants and issue API keys (JSON output)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a tenant and its first API key")
        create.add_argument("name")
        create.add_argument("--tier", default=Tier.FREE, choices=Tier.ALL)
        create.add_argument("--slug")
        key = sub.add_parser("key", help="issue a new API key for a tenant (name or slug)")
        key.add_argument("name")
        key.add_argument("--key-name", default="cli")
        key.add_argument(
            "--scopes", default="read,write", help="comma-separated: read, write, admin"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py tenants")
        try:
            if options["action"] == "create":
                tenant = services.create_tenant(
                    actor=actor, name=options["name"], tier=options["tier"], slug=options["slug"]
                )
                issued = services.issue_key(actor=actor, tenant=tenant, name="initial")
            else:
                found = Tenant.objects.filter(
                    Q(slug=options["name"]) | Q(name=options["name"])
                ).first()
                if found is None:
                    raise CommandError(f"no tenant named {options['name']!r}")
                tenant = found
                scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
                issued = services.issue_key(
                    actor=actor, tenant=tenant, name=options["key_name"], scopes=scopes
                )
        except services.TenantError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            json.dumps(
                {
                    "tenant_id": tenant.pk,
                    "slug": tenant.slug,
                    "tier": tenant.tier,
                    "status": tenant.status,
                    "api_key": issued.plaintext,
                    "key_prefix": issued.key.prefix,
                    "scopes": issued.key.scopes,
                }
            )
        )
