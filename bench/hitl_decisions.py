"""Time from a reviewer's decision to the run's completion visible through the API (SPEC 6).

    .venv/bin/python bench/hitl_decisions.py [--decisions 200] [--reviewers 4]

Starts everything itself in a temporary folder on this machine (unix sockets and
127.0.0.1): embedded PostgreSQL and Redis, migrations, an enterprise tenant with an API key,
a ``support_agent`` with a small knowledge base, reviewers signed in to the dashboard, and
the ASGI web server (uvicorn, one worker); stops all of them at the end. Prints one JSON
object.

Runs are escalated by the real (offline) pipeline in this process, so each has its review
request queued exactly as in production. Then, per decision, over HTTP:

* ``t0``: the reviewer's session sends ``POST /api/v1/hitl/queue/{id}/respond``
  (approve, edit and reject in turn, with CSRF like the dashboard);
* ``t1``: the tenant's API key first sees ``GET /api/v1/runs/{run_id}`` answer
  ``303`` (completed), polling on its own keep-alive connection right after the decision
  was sent (every 2 ms).

``decision_to_visible`` is ``t1 - t0``: SPEC target p95 <= 1 s. Phases: ``sequential``
(one reviewer, one decision at a time) and ``concurrent`` (``--reviewers`` reviewers
deciding at once, each polling for its own runs). ``respond`` is the POST alone. The run
check at the end counts completed runs and assistant messages (one per run).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

HOST = "127.0.0.1"
STARTED = time.monotonic()
MESSAGES = (
    "my password and my refund and the weather",
    "the reset link for my refund invoice is broken",
    "I want to talk to a human",
)
KNOWLEDGE = (
    (
        "Resetting your password",
        "To reset your password, open Settings, choose Security and click 'Reset password'. "
        "We email you a link that is valid for 30 minutes.",
    ),
    (
        "Refunds",
        "Refunds are issued to the original card within 5 business days. "
        "You can request a refund from the Billing page.",
    ),
)


def note(message: str) -> None:
    print(f"bench | {time.monotonic() - STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(seconds: list[float]) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "n": len(seconds),
        "p50_ms": ms(pct(seconds, 50)),
        "p95_ms": ms(pct(seconds, 95)),
        "p99_ms": ms(pct(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(statistics.fmean(seconds) if seconds else None),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Http:
    """One keep-alive HTTP/1.1 connection with fixed headers."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.headers = headers

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body) if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.conn.close()


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.web: subprocess.Popen[bytes] | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None

    # -- services ----------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        t0 = time.monotonic()
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
            [
                sys.executable,
                "manage.py",
                "migrate",
                "--noinput",
                "--skip-checks",
                "--verbosity",
                "0",
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        for key in ("DATABASE_URL", "REDIS_URL", "AGENTFLOW_HOME", "AGENTFLOW_ENV", "LOG_LEVEL"):
            os.environ[key] = self.env[key]
        os.environ["DJANGO_SETTINGS_MODULE"] = "agentflow.server.settings"
        import django

        django.setup()
        return {"services_and_migrate_s": round(time.monotonic() - t0, 2)}

    def start_web(self) -> None:
        self.port = free_port()
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
                str(self.port),
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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError((self.tmp / "web.log").read_text(errors="replace")[-2000:])
            with contextlib.suppress(OSError):
                client = Http(self.port, {})
                status, _ = client.call("GET", "/readyz")
                client.close()
                if status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("web server not ready")

    def stop(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.web is not None and self.web.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.web.pid, signal.SIGTERM)  # its own session: uvicorn only
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

    # -- data --------------------------------------------------------------------------
    def create_tenant(self, reviewers: int) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        from agentflow import knowledge
        from agentflow.services import create_agent
        from governance.audit import Actor
        from tenants import services
        from tenants.context import tenant_scope

        actor = Actor.system("bench")
        tenant = services.create_tenant(actor=actor, name="Bench HITL", tier="enterprise")
        unlimited = {
            "requests_per_minute": None,
            "requests_per_minute_per_key": None,
            "concurrent_runs": None,
            "runs_per_month": None,
        }
        services.update_quotas(actor=actor, tenant=tenant, tier=None, overrides=unlimited)
        self.tenant = tenant
        self.api_key = services.issue_key(actor=actor, tenant=tenant, scopes=["read"]).plaintext
        self.agent = create_agent(
            actor=actor, tenant=tenant, name="support", blueprint="support_agent", config={}
        )
        with tenant_scope(tenant.pk):
            for title, text in KNOWLEDGE:
                knowledge.ingest_document(
                    agent=self.agent, title=title, content_type="text/markdown", text=text
                )
        self.sessions: list[dict[str, str]] = []
        for index in range(reviewers):
            user = get_user_model().objects.create_user(f"reviewer{index}")
            services.add_member(actor=actor, tenant=tenant, user=user, role="reviewer")
            client = Client()
            client.force_login(user)
            csrf = secrets.token_hex(16)  # 32 characters: a valid unmasked CSRF secret
            self.sessions.append(
                {
                    "Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}",
                    "X-CSRFToken": csrf,
                }
            )

    def escalate(self, count: int) -> list[dict[str, str]]:
        """``count`` runs through the real pipeline, each settled awaiting review."""
        from agentflow import services
        from agentflow.models import AgentSession, Run
        from hitl.models import HITLRequest
        from tenants.context import tenant_scope

        made = []
        with tenant_scope(self.tenant.pk):
            for index in range(count):
                user_id = f"customer-{len(self.sessions)}-{time.monotonic_ns()}-{index}"
                session = AgentSession.objects.create(agent=self.agent, user_id=user_id)
                run = Run.objects.create(
                    agent=self.agent,
                    session=session,
                    user_id=user_id,
                    input=MESSAGES[index % len(MESSAGES)],
                )
                services.execute_run(str(run.pk))
                request = HITLRequest.objects.get(run=run)
                made.append(
                    {
                        "request_id": str(request.pk),
                        "run_id": str(run.pk),
                        "proposed": "yes" if request.proposed_answer else "",
                    }
                )
        return made


def decide_and_watch(
    port: int, session: dict[str, str], api_key: str, items: list[dict[str, str]]
) -> dict[str, list[float]]:
    reviewer = Http(port, session)
    watcher = Http(port, {"Authorization": f"Bearer {api_key}"})
    visible: list[float] = []
    responds: list[float] = []
    polls: list[float] = []
    try:
        for index, item in enumerate(items):
            kind = ("approve", "edit", "reject")[index % 3]
            if kind == "approve" and not item["proposed"]:
                kind = "edit"
            body: dict[str, Any] = {"decision": kind}
            if kind == "edit":
                body["response"] = "Open Settings > Security > Reset password."
            if kind == "reject":
                body["reason"] = "needs a person"
            t0 = time.perf_counter()
            status, content = reviewer.call(
                "POST", f"/api/v1/hitl/queue/{item['request_id']}/respond", body
            )
            t_respond = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"respond answered {status}: {content[:300]!r}")
            attempts = 0
            while True:
                attempts += 1
                status, _ = watcher.call("GET", f"/api/v1/runs/{item['run_id']}")
                if status == 303:
                    break
                if attempts > 5000:
                    raise RuntimeError(f"run {item['run_id']} never became visible")
                time.sleep(0.002)
            t1 = time.perf_counter()
            responds.append(t_respond - t0)
            visible.append(t1 - t0)
            polls.append(attempts)
    finally:
        reviewer.close()
        watcher.close()
    return {"visible": visible, "respond": responds, "polls": polls}


def check_runs(world: World) -> dict[str, Any]:
    from django.db.models import Count

    from agentflow.models import Message, Run
    from tenants.context import tenant_scope

    with tenant_scope(world.tenant.pk):
        statuses = dict(
            Run.objects.values("status").annotate(n=Count("pk")).values_list("status", "n")
        )
        per_run = (
            Message.objects.filter(role="assistant", run__isnull=False)
            .values("run_id")
            .annotate(n=Count("pk"))
        )
        extra = sum(1 for row in per_run if row["n"] != 1)
        answered = per_run.count()
    return {"runs_by_status": statuses, "runs_answered": answered, "runs_with_extra_answers": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--reviewers", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentflow-bench-hitl-"))
    if os.geteuid() == 0:
        tmp.chmod(0o777)  # the embedded PostgreSQL runs as its own user under root
    world = World(tmp)
    result: dict[str, Any] = {
        "benchmark": "hitl_decisions",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    try:
        note("starting PostgreSQL and Redis, migrating")
        result["setup"] = world.start()
        world.create_tenant(args.reviewers)
        note(f"escalating {2 * args.decisions} runs through the offline pipeline")
        t0 = time.monotonic()
        sequential_items = world.escalate(args.decisions)
        concurrent_items = world.escalate(args.decisions)
        result["setup"]["escalate_runs_s"] = round(time.monotonic() - t0, 2)
        from django.db import connections

        connections.close_all()
        note("starting uvicorn")
        world.start_web()

        note(f"sequential: {args.decisions} decisions by one reviewer")
        seq = decide_and_watch(world.port, world.sessions[0], world.api_key, sequential_items)

        note(f"concurrent: {args.decisions} decisions by {args.reviewers} reviewers at once")
        shares = [concurrent_items[i :: args.reviewers] for i in range(args.reviewers)]
        outcomes: list[dict[str, list[float]]] = [{} for _ in shares]

        def work(index: int) -> None:
            outcomes[index] = decide_and_watch(
                world.port, world.sessions[index], world.api_key, shares[index]
            )

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(shares))]
        t_start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t_start
        merged = {
            key: [v for o in outcomes for v in o.get(key, [])] for key in ("visible", "respond")
        }
        if len(merged["visible"]) != args.decisions:
            raise RuntimeError("a concurrent reviewer failed; see the web log")

        result["sequential"] = {
            "decision_to_visible": summary(seq["visible"]),
            "respond": summary(seq["respond"]),
            "mean_polls": round(statistics.fmean(seq["polls"]), 2),
        }
        result["concurrent"] = {
            "reviewers": args.reviewers,
            "decision_to_visible": summary(merged["visible"]),
            "respond": summary(merged["respond"]),
            "decisions_per_s": round(args.decisions / wall, 1),
        }
        result["check"] = check_runs(world)
        worst = max(
            result["sequential"]["decision_to_visible"]["p95_ms"],
            result["concurrent"]["decision_to_visible"]["p95_ms"],
        )
        result["target"] = {
            "spec": "decision to completion visible through the API: p95 <= 1000 ms",
            "worst_p95_ms": worst,
            "met": worst <= 1000,
        }
    finally:
        note("stopping")
        world.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
