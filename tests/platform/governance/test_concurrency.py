"""1,000 appends from four processes at once make one linear, verifiable chain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from django.db import connection

from governance.models import AuditEvent
from governance.verify import verify_chain
from tenants import services
from tests.platform.api.conftest import ACTOR

ROOT = Path(__file__).resolve().parents[3]
WORKERS = 4
PER_WORKER = 250


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_concurrent_appends_from_processes_form_one_contiguous_chain(
    transactional_db: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    tenant = services.create_tenant(actor=ACTOR, name="Concurrency")  # event 1
    env = {**os.environ, "AUDIT_TEST_DB": connection.settings_dict["NAME"]}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.platform.governance.append_worker",
                str(tenant.pk),
                str(PER_WORKER),
                str(n),
                str(tmp_path),
            ],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(tmp_path.glob("ready-*"))) < WORKERS:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(w.poll() is None for w in workers), [w.communicate()[1] for w in workers]
            time.sleep(0.05)
        (tmp_path / "go").touch()
        for worker in workers:
            _, stderr = worker.communicate(timeout=120)
            assert worker.returncode == 0, stderr[-2000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    rows = list(
        AuditEvent.unscoped.filter(tenant=tenant)
        .order_by("sequence")
        .values_list("sequence", "actor_id", "prev_hash", "hash", "occurred_at")
    )
    total = 1 + WORKERS * PER_WORKER
    assert [row[0] for row in rows] == list(range(1, total + 1))  # contiguous, no duplicates
    assert all(later[2] == earlier[3] for earlier, later in pairwise(rows))  # one linear chain
    result = verify_chain(tenant.pk)
    assert (result.ok, result.events, result.first_bad) == (True, total, None)
    # The processes really interleaved (a serial run would switch writers WORKERS-1 times).
    switches = sum(1 for a, b in pairwise(rows[1:]) if a[1] != b[1])
    assert switches > 50, switches
    seconds = (rows[-1][4] - rows[1][4]).total_seconds()
    record_property("appends_per_second", round((total - 1) / seconds))
    record_property("writer_switches", switches)
    print(f"{total - 1} appends in {seconds:.2f} s, {switches} writer switches")
