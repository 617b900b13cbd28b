"""Time from a run's state change committed in the database to the change on screen (SPEC 11, 13).

    .venv/bin/python bench/dashboard_latency.py [--runs 50] [--gap-ms 40]

Starts everything itself in a temporary folder (unix sockets and 127.0.0.1): embedded
PostgreSQL and Redis, migrations, a tenant with an agent and ``--runs`` pending runs, an
operator, the ASGI web server (uvicorn, one worker, as ``make run`` starts it) and headless
Chromium (the system's /usr/bin/chromium, driven by Playwright) signed in as the operator
on ``/runs/``. Stops all of them at the end and prints one JSON object.

Then each run goes pending -> processing -> completed (2 x ``--runs`` changes, one at a
time, ``--gap-ms`` apart) through ``agentflow.services.transition``, the function the
Celery worker uses, which publishes ``run.updated`` when its transaction commits:

* ``t0``: wall clock in this process right after the COMMIT returned (an on-commit hook
  registered before the transition's own, so before the event is even sent);
* ``dom``: wall clock in Chromium when a MutationObserver sees the row's
  ``[data-field=status]`` read the new status (the live JS applied the event);
* ``frame``: the next animation frame after that: the change is painted.

``dom_ms`` and ``visible_ms`` are ``dom - t0`` and ``frame - t0`` (p50/p95/p99). Both clocks
are this machine's wall clock. Target: visible p95 <= 250 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STARTED = time.monotonic()
TARGET_P95_MS = 250.0

# Installed in the page before the first change: one entry per (run, status) the row shows.
OBSERVE = """() => {
  window.__seen = {};
  const record = (row) => {
    const field = row.querySelector('[data-field=status]');
    if (!field) return;
    const key = row.dataset.runId + ':' + field.textContent.trim();
    if (key in window.__seen) return;
    const entry = {dom: performance.timeOrigin + performance.now(), frame: null};
    window.__seen[key] = entry;
    requestAnimationFrame(() => { entry.frame = performance.timeOrigin + performance.now(); });
  };
  const table = document.querySelector('[data-testid=runs-table]');
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const node = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      const row = node && node.closest ? node.closest('tr[data-run-id]') : null;
      if (row) record(row);
      for (const added of m.addedNodes) {
        if (added.nodeType === 1 && added.matches('tr[data-run-id]')) record(added);
      }
    }
  }).observe(table, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def note(message: str) -> None:
    print(f"bench | {time.monotonic() - STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> dict[str, Any]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "n": len(values_ms),
        "p50_ms": r(pct(values_ms, 50)),
        "p95_ms": r(pct(values_ms, 95)),
        "p99_ms": r(pct(values_ms, 99)),
        "max_ms": r(max(values_ms) if values_ms else None),
        "mean_ms": r(statistics.fmean(values_ms) if values_ms else None),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class World:
    """Services, the web server and the data; the ORM only ever runs in ``self.db``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.web: subprocess.Popen[bytes] | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        # Playwright's sync API marks an event loop as running in the main thread, where
        # Django then refuses the ORM: every database call goes through this one thread.
        self.db = ThreadPoolExecutor(1, thread_name_prefix="db")

    def start(self) -> None:
        self.postgres = EmbeddedPostgres(self.tmp / "postgres")
        database_url = self.postgres.start()
        self.redis = EmbeddedRedis(self.tmp / "redis")
        redis_url = self.redis.start()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "AGENTFLOW_HOME": str(self.tmp / "home"),
            "AGENTFLOW_ENV": "development",
            "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("DEBUG", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        for key in ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_HOME", "AGENTFLOW_ENV", "LOG_LEVEL"):
            os.environ[key] = self.env[key]
        os.environ["DJANGO_SETTINGS_MODULE"] = "agentflow.server.settings"
        import django

        django.setup()

    def start_web(self) -> str:
        port = free_port()
        log = (self.tmp / "web.log").open("wb")
        self.web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "agentflow.server.asgi:application",
                "--host",
                HOST,
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError((self.tmp / "web.log").read_text(errors="replace")[-2000:])
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return url
            time.sleep(0.2)
        raise RuntimeError("web server not ready")

    def seed(self, runs: int) -> tuple[str, list[str]]:
        """(operator's session cookie, ids of ``runs`` pending runs) in a fresh tenant."""

        def work() -> tuple[str, list[str]]:
            from django.conf import settings
            from django.contrib.auth import get_user_model
            from django.test import Client

            from agentflow.models import AgentSession, Run
            from agentflow.services import create_agent
            from governance.audit import Actor
            from tenants import services
            from tenants.context import tenant_scope

            actor = Actor.system("bench")
            tenant = services.create_tenant(actor=actor, name="Bench dashboard", tier="enterprise")
            agent = create_agent(
                actor=actor, tenant=tenant, name="support", blueprint="support_agent", config={}
            )
            user = get_user_model().objects.create_user("operator")
            services.add_member(actor=actor, tenant=tenant, user=user, role="operator")
            client = Client()
            client.force_login(user)
            ids = []
            with tenant_scope(tenant.pk):
                for index in range(runs):
                    session = AgentSession.objects.create(agent=agent, user_id=f"c{index}")
                    run = Run.objects.create(
                        agent=agent, session=session, user_id=session.user_id, input="hello"
                    )
                    ids.append(str(run.pk))
            self.tenant_id = tenant.pk
            return client.cookies[settings.SESSION_COOKIE_NAME].value, ids

        return self.db.submit(work).result()

    def change(self, run_id: str, from_status: str, to_status: str) -> float:
        """Commit one transition; the wall clock (ms) right after the COMMIT returned."""

        def work() -> float:
            from django.db import transaction

            from agentflow.services import transition
            from tenants.context import tenant_scope

            committed: list[float] = []
            with tenant_scope(self.tenant_id), transaction.atomic():
                # Registered first, so it runs before the transition's own publish hook.
                transaction.on_commit(lambda: committed.append(time.time() * 1000))
                if not transition(run_id, (from_status,), to_status):
                    raise RuntimeError(f"run {run_id} was not {from_status}")
            return committed[0]

        return self.db.submit(work).result()

    def stop(self) -> None:
        def close() -> None:
            from django.db import connections

            connections.close_all()

        with contextlib.suppress(Exception):
            self.db.submit(close).result()
        self.db.shutdown()
        if self.web is not None and self.web.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.web.pid, signal.SIGTERM)
            try:
                self.web.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.web.pid, signal.SIGKILL)
                self.web.wait()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def measure(world: World, url: str, runs: int, gap_ms: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    cookie, ids = world.seed(runs)
    note(f"{runs} pending runs; opening /runs/ in Chromium")
    dom: list[float] = []
    frame: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": cookie, "url": url}])
        page = context.new_page()
        page.goto("/runs/")
        page.wait_for_selector("body[data-live-status=connected]", state="attached")
        rows = page.locator("tr[data-run-id]").count()
        if rows < runs:
            raise RuntimeError(f"/runs/ lists {rows} rows, expected {runs}")
        page.evaluate(OBSERVE)
        changes = [(run, "pending", "processing") for run in ids]
        changes += [(run, "processing", "completed") for run in ids]
        for index, (run_id, before, after) in enumerate(changes):
            committed = world.change(run_id, before, after)
            key = f"{run_id}:{after}"
            page.wait_for_function(
                "(key) => window.__seen[key] && window.__seen[key].frame !== null",
                arg=key,
                timeout=10_000,
            )
            seen = page.evaluate("(key) => window.__seen[key]", key)
            dom.append(seen["dom"] - committed)
            frame.append(seen["frame"] - committed)
            if (index + 1) % 25 == 0:
                note(f"{index + 1}/{len(changes)} changes")
            time.sleep(gap_ms / 1000)
        version = browser.version
        browser.close()
    visible = summary(frame)
    return {
        "changes": len(changes),
        "chromium": version,
        "dom_ms": summary(dom),
        "visible_ms": visible,
        "targets": {
            "visible_p95_ms": TARGET_P95_MS,
            "met": visible["p95_ms"] is not None and visible["p95_ms"] <= TARGET_P95_MS,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs (2 changes each, <= 50)")
    parser.add_argument("--gap-ms", type=float, default=40.0, help="pause between changes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50: /runs/ lists the newest 50")
    if not Path(CHROMIUM).exists():
        print(json.dumps({"error": f"no Chromium at {CHROMIUM}"}))
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="agentflow-bench-dashboard-"))
    world = World(tmp)
    try:
        note("starting PostgreSQL, Redis, migrations")
        world.start()
        url = world.start_web()
        note(f"web at {url}")
        result = measure(world, url, args.runs, args.gap_ms)
    finally:
        world.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "dashboard_latency",
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        **result,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
