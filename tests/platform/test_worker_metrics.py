"""Worker counters on the web's ``/metrics``: with ``PROMETHEUS_MULTIPROC_DIR``, a worker
process (here a real separate Python process running tasks through the app's ContextTask)
writes its counters to files there, and ``/metrics`` sums them next to the families read
from PostgreSQL at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from agentflow.server import health
from agentflow.server.run import fresh_metrics_dir

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import contextlib
import django
django.setup()
from agentflow.core.metrics import RUN_PERSISTENCE_FAILURES
from agentflow.server.celery import app
from agentflow.server.tasks import echo_context

@app.task(name="tests.broken")
def broken():
    raise RuntimeError("broken on purpose")

for _ in range(3):
    echo_context({"n": 1})  # run in this process, through ContextTask, as a worker runs it
with contextlib.suppress(RuntimeError):
    broken()
RUN_PERSISTENCE_FAILURES.labels(stage="memory").inc()
"""


def _worker(directory: Path) -> None:
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _samples(text: str, name: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


@pytest.mark.django_db
def test_two_worker_processes_counters_are_summed_on_the_web_metrics(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = Path(fresh_metrics_dir(tmp_path / "prometheus"))
    _worker(directory)
    _worker(directory)  # another process: another file, summed
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setattr(health, "_shared", {})

    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    tasks = _samples(text, "agentflow_celery_tasks_total")
    assert tasks['agentflow_celery_tasks_total{outcome="ok",task="maintenance.echo_context"}'] == 6
    assert tasks['agentflow_celery_tasks_total{outcome="error",task="tests.broken"}'] == 2
    failures = _samples(text, "agentflow_run_persistence_failures_total")
    assert failures == {'agentflow_run_persistence_failures_total{stage="memory"}': 2}
    # The families read from PostgreSQL at scrape time are still there.
    assert "# TYPE agentflow_runs_last_hour gauge" in text


def test_a_new_start_counts_from_zero(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("kept")

    assert fresh_metrics_dir(directory) == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
