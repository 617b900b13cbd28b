"""``manage.py demo_seed``: the Acme demo (tenant, key, support agent, reviewer, operator).

Idempotent: a second run creates nothing and prints no secret. ``--once`` (what
``make run`` uses) does nothing but remind how to log in once the demo has been seeded in
this data folder, so a user who deleted part of it is not overruled on every start.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from agentflow.core.conf import site_url
from frontend import demo


class Command(BaseCommand):
    help = "Create the demo tenant Acme with a support agent, a reviewer and an operator."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default=None, help="where the site runs (default: HOST and PORT, as make run)"
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="skip (and only print the hints) when this data folder was seeded before",
        )
        parser.add_argument(
            "--password", help="password of new demo users (default: DEMO_PASSWORD, else random)"
        )

    def say(self, message: str) -> None:
        self.stdout.write(f"agentflow | {message}")

    def handle(self, *args: Any, **options: Any) -> None:
        url = (options["url"] or site_url()).rstrip("/")
        flag = demo.home() / demo.SEEDED_FLAG
        if options["once"] and flag.exists():
            self.say(f"demo: tenant {demo.TENANT_NAME} was seeded before ({flag})")
            self._hints(url, None)
            return
        if not get_user_model().objects.filter(is_superuser=True).exists():
            call_command("bootstrap_admin", url=url, stdout=self.stdout)
        result = demo.seed_demo(password=options["password"])
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text("seeded\n", encoding="utf-8")
        if result.created:
            self.say(f"demo: created {', '.join(result.created)} in tenant {result.tenant.slug}")
        else:
            self.say(f"demo: tenant {result.tenant.slug} is complete; nothing to create")
        if result.api_key:
            self.say("")
            self.say(f"demo API key (shown once; saved in {result.key_file}):")
            self.say(f"    {result.api_key}")
            self.say("")
        self._hints(url, result)

    def _hints(self, url: str, result: demo.DemoResult | None) -> None:
        credentials = demo.home() / demo.CREDENTIALS_FILE
        if result is not None and result.passwords:
            self.say(f"demo logins at {url}/login/ (saved in {credentials}):")
            roles = dict(demo.USERS)
            for name, secret in result.passwords.items():
                self.say(f"    {name} / {secret}    ({roles[name]})")
        else:
            names = " or ".join(name for name, _ in demo.USERS)
            where = f" (passwords in {credentials})" if credentials.exists() else ""
            self.say(f"demo: log in at {url}/login/ as {names}{where}")
        self.say(f"demo traffic: .venv/bin/python manage.py demo_traffic --url {url}")
