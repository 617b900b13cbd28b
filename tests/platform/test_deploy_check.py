"""``manage.py check --deploy`` is clean in production mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform.manage_check import manage_check

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
    result = manage_check(_production_env(tmp_path), "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = _production_env(tmp_path)
    env.pop("SECRET_KEY_FILE")
    result = manage_check(env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "check"],
        ["-m", "uvicorn", "agentflow.server.asgi:application", "--port", "0"],
        ["-m", "celery", "-A", "agentflow.server.celery", "worker"],
    ],
    ids=["manage.py", "uvicorn", "celery"],
)
def test_a_missing_variable_in_production_is_one_line_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    """Web, worker and management commands alike: no traceback for an operator's typo."""
    env = _production_env(tmp_path)
    env.pop("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "agentflow: configuration error: DATABASE_URL is required in production"
    ]


@pytest.mark.parametrize("variable", ["INTENT_MODEL_CACHE_KEEP_DAYS", "DB_PREPARE_THRESHOLD"])
def test_a_negative_count_is_one_line_naming_it(tmp_path: Path, variable: str) -> None:
    env = {**_production_env(tmp_path), variable: "-1"}
    result = manage_check(env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"agentflow: configuration error: {variable}=-1: 0 or more"
    ]


@pytest.mark.parametrize(("threshold", "expected"), [("0", "None None"), ("", "True 2")])
def test_the_prepare_threshold_sets_server_side_binding(
    tmp_path: Path, threshold: str, expected: str
) -> None:
    """0 is client-side binding, nothing prepared (PgBouncer's transaction mode); unset is
    server-side parameters, each statement prepared on its connection's second run."""
    env = {**_production_env(tmp_path), "DB_PREPARE_THRESHOLD": threshold}
    if not threshold:
        env.pop("DB_PREPARE_THRESHOLD")
    script = (
        "from django.conf import settings; o = settings.DATABASES['default']['OPTIONS']; "
        "print(o.get('server_side_binding'), o.get('prepare_threshold'))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
