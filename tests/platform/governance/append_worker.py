"""One process of the concurrent-append test: waits for the start signal, then appends.

Run as ``python -m tests.platform.governance.append_worker TENANT_ID COUNT WORKER DIR`` with
``AUDIT_TEST_DB`` naming the test database (the parent's connection settings otherwise).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    tenant_id, count, worker, folder = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3],
        Path(sys.argv[4]),
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = os.environ["AUDIT_TEST_DB"]
    from django.db import connection

    from governance.audit import Actor, append

    connection.ensure_connection()
    (folder / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists():  # all processes start appending together
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.005)
    for index in range(count):
        append(
            tenant_id=tenant_id,
            actor=Actor.system(f"worker-{worker}"),
            action="probe.concurrent",
            target_type="probe",
            target_id=f"{worker}-{index}",
            changes={"worker": worker, "index": index},
        )
    connection.close()


if __name__ == "__main__":
    main()
