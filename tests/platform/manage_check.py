"""`manage.py check` in a subprocess, as an operator's start-up runs it (Django's checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def manage_check(env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    """`python manage.py check [options]` from the checkout, in `env`; its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", "check", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
