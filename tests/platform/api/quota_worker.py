"""One process of the exact-quota test: waits for the start signal, then POSTs runs.

Run as ``python -m tests.platform.api.quota_worker KEY AGENT_ID THREADS WORKER DIR`` with
``QUOTA_TEST_DB`` naming the test database. Prints one ``status:limit`` per POST.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> None:
    key, agent_id, threads, worker, folder = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        sys.argv[4],
        Path(sys.argv[5]),
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = os.environ["QUOTA_TEST_DB"]
    from django.db import connections
    from django.test import Client

    barrier = threading.Barrier(threads)

    def post(index: int) -> str:
        client = Client(raise_request_exception=False)
        try:
            client.get("/healthz")  # connected before the start signal
            barrier.wait(timeout=60)
            _wait_for(folder / "go")
            response = client.post(
                f"/api/v1/agents/{agent_id}/runs",
                {"user_id": f"user-{worker}-{index}", "message": "hi"},
                content_type="application/json",
                headers={"Authorization": f"Bearer {key}", "Prefer": "respond-async"},
            )
            limit = response.json().get("limit", "") if response.status_code == 429 else ""
            return f"{response.status_code}:{limit}"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        started = [pool.submit(post, index) for index in range(threads)]
        (folder / f"ready-{worker}").touch()
        print("\n".join(future.result() for future in started))


def _wait_for(signal: Path) -> None:
    deadline = time.monotonic() + 60
    while not signal.exists():  # every process's threads start together
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.002)


if __name__ == "__main__":
    main()
