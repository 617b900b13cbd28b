#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
    from django.core.management import execute_from_command_line

    from agentflow.server.env import ImproperlyConfiguredEnv

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfiguredEnv as exc:
        # A missing or malformed variable is the operator's to fix: one line naming it.
        sys.exit(f"agentflow: configuration error: {exc}")


if __name__ == "__main__":
    main()
