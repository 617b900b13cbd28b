"""Create the first admin account on a fresh install, and say how to log in."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from agentflow.core.conf import site_url


class Command(BaseCommand):
    help = "Create the first superuser (ADMIN_USERNAME / ADMIN_PASSWORD, else a generated one)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", default=None, help="where the site runs (default: HOST and PORT, as make run)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        credentials_file = Path(settings.AGENTFLOW_HOME) / "admin-credentials.txt"
        login_url = f"{(options['url'] or site_url()).rstrip('/')}/admin/"
        if user_model.objects.filter(is_superuser=True).exists():
            hint = ""
            if credentials_file.exists():
                hint = f" (first password saved in {credentials_file})"
            self.stdout.write(f"agentflow | admin account exists; log in at {login_url}{hint}")
            return
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        credentials = f"username: {username}\npassword: {password}\n"
        credentials_file.write_text(credentials, encoding="utf-8")
        credentials_file.chmod(0o600)
        self.stdout.write(
            f"agentflow | created admin account: log in at {login_url} as "
            f"{username} / {password} (saved in {credentials_file})"
        )
