"""``manage.py check --deploy`` is clean in production mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _production_env(tmp_path: Path) -> dict[str, str]:
    secret_file = tmp_path / "secret"
    secret_file.write_text("x" * 20 + "-production-secret-key-with-enough-entropy-1234567890")
    env = {
        **os.environ,
        "AGENTFLOW_ENV": "production",
        "SECRET_KEY_FILE": str(secret_file),
        "ALLOWED_HOSTS": "agentflow.example.com",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "AGENTFLOW_HOME": str(tmp_path),
    }
    env.pop("SECRET_KEY", None)
    return env


def test_check_deploy_is_clean_in_production(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = _production_env(tmp_path)
    env.pop("SECRET_KEY_FILE")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
