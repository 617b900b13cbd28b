"""Page load time of every dashboard page that lists data, in a big tenant (issue 19).

    .venv/bin/python bench/dashboard_pages.py [--runs 10000] [--golden-paths 1000]
        [--other-tenant-runs 10000] [--requests 25] [--compare-indexes] [--out FILE]

Starts its own embedded PostgreSQL and Redis in a temporary folder (never the test ones),
runs the migrations and seeds one tenant with ``bulk_create``: 3 agents with a knowledge
document each, ``--runs`` runs spread over the last 7 days (results with intent,
confidence and sources, a third citing a golden path; 2% playground runs), one review
request for every tenth run (most decided, 1 in 20 breached its SLA, 100 still open),
``--golden-paths`` golden paths with embeddings, one sealed audit event per run, 20
members and 5 webhook endpoints; and a neighbour tenant with ``--other-tenant-runs`` runs
over the same week (so an index on time alone is not the tenant's). PostgreSQL is
ANALYZEd after seeding, as autovacuum would.

Then, as the tenant's owner through Django's test client (the whole Django stack,
middleware and templates included, in this process: no network), it GETs each page
``--requests`` times after 3 unmeasured warm-ups and reports per page p50 / p95 / max in
ms, the response size, the SQL queries one load runs, their total time and the two
slowest (what an index could help). ``--compare-indexes`` then drops the indexes issue 19
added for the dashboard (``run_tenant_created``, ``hitl_request_breached``), ANALYZEs and
measures every page again (``without_issue_19_indexes``); ``sql`` holds, with and
without them, the median EXPLAIN ANALYZE execution time of each run and review query of
the runs list and the overview's trends (and the indexes its plan uses), which the page
timings' noise hides.
Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

STARTED = time.monotonic()
WARMUP = 3
SQL_CHARS = 300  # of each slowest query in the report
INTENTS = ("password_reset", "refund", "invoice", "shipping", "account_delete")


def note(message: str) -> None:
    print(f"bench | {time.monotonic() - STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def start(tmp: Path) -> tuple[EmbeddedPostgres, EmbeddedRedis]:
    postgres = EmbeddedPostgres(tmp / "postgres")
    redis = EmbeddedRedis(tmp / "redis")
    os.environ.update(
        DATABASE_URL=postgres.start(),
        REDIS_URL=redis.start(),
        AGENTFLOW_HOME=str(tmp / "home"),
        AGENTFLOW_ENV="development",
        DJANGO_SETTINGS_MODULE="agentflow.server.settings",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("DEBUG", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    return postgres, redis


def _result(rng: random.Random, golden: bool) -> dict[str, Any]:
    kind = "golden_path" if golden else "knowledge"
    return {
        "answer": "You can reset it from the sign-in page.",
        "intent": rng.choice(INTENTS),
        "confidence": round(rng.uniform(0.3, 0.99), 3),
        "sources": [{"kind": kind, "id": f"{kind}-{rng.randrange(1000)}", "score": 0.9}],
    }


def seed_runs(agents: list[Any], count: int, rng: random.Random) -> list[Any]:
    from agentflow.models import Run, RunStatus

    now = datetime.now(UTC)
    rows = []
    for index in range(count):
        golden = index % 3 == 0
        rows.append(
            Run(
                agent=agents[index % len(agents)],
                user_id=f"customer-{index % 700}",
                input=f"Customer message number {index}: how do I reset my password?",
                metadata={"playground": True} if index % 50 == 0 else {},
                status=RunStatus.COMPLETED if index % 10 else RunStatus.AWAITING_REVIEW,
                progress=1.0,
                result=_result(rng, golden),
                tokens=rng.randrange(200, 1200),
                cost_usd=Decimal(rng.randrange(0, 3000)) / Decimal(1_000_000),
                created_at=now - timedelta(seconds=rng.uniform(0, 7 * 86400)),
            )
        )
    return Run.objects.bulk_create(rows, batch_size=2000)


def seed_reviews(runs: list[Any], rng: random.Random) -> int:
    from hitl.models import HITLRequest

    rows = []
    escalated = [run for run in runs if run.status == "awaiting_review"]
    for index, run in enumerate(escalated):
        open_ = index < 100
        decided = None if open_ else run.created_at + timedelta(minutes=rng.uniform(1, 240))
        breached = run.created_at + timedelta(hours=1) if index % 20 == 0 else None
        rows.append(
            HITLRequest(
                run=run,
                kind="low_confidence",
                priority="medium",
                priority_rank=2,
                status="pending" if open_ else "approved",
                question=run.input,
                proposed_answer="You can reset it from the sign-in page.",
                intent=run.result["intent"],
                confidence=run.result["confidence"],
                escalation_reason="low_confidence",
                context={"agent_id": str(run.agent_id), "user_id": run.user_id},
                required_role="reviewer",
                sla_deadline=run.created_at + timedelta(hours=1),
                breached_at=breached,
                decision="" if open_ else "approve",
                decided_at=decided,
                created_at=run.created_at,
            )
        )
    HITLRequest.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def seed_golden_paths(agents: list[Any], count: int, rng: random.Random) -> None:
    from agentflow.models import EMBEDDING_DIMENSIONS
    from learning.models import GoldenPath

    rows = []
    for index in range(count):
        vector = [rng.gauss(0, 1) for _ in range(EMBEDDING_DIMENSIONS)]
        norm = sum(v * v for v in vector) ** 0.5
        rows.append(
            GoldenPath(
                agent=agents[index % len(agents)],
                category=INTENTS[index % len(INTENTS)],
                question=f"Golden question {index}: how do I reset my password?",
                answer="You can reset it from the sign-in page.",
                source="hitl",
                score=round(rng.uniform(0.5, 1.0), 3),
                usage_count=rng.randrange(0, 50),
                embedding=[v / norm for v in vector],
            )
        )
    GoldenPath.objects.bulk_create(rows, batch_size=500)


def seed_audit(tenant_id: int, runs: list[Any]) -> None:
    from governance.audit import append_many, seal_chain
    from governance.models import AuditEvent

    events = [
        AuditEvent(
            tenant_id=tenant_id,
            occurred_at=run.created_at,
            actor_type="api_key",
            actor_id="af_bench",
            action="run.created",
            target_type="run",
            target_id=str(run.pk),
            changes={"agent_id": str(run.agent_id)},
        )
        for run in sorted(runs, key=lambda r: r.created_at)
    ]
    for offset in range(0, len(events), 2000):
        append_many(events[offset : offset + 2000])
    seal_chain(tenant_id)


def seed_people(tenant: Any, actor: Any) -> Any:
    """The owner who reads the pages, 19 more members, and 5 webhook endpoints."""
    from django.contrib.auth import get_user_model

    from learning.webhooks import services as webhooks
    from tenants import services

    users = get_user_model().objects
    owner = users.create_user("owner", "owner@example.com", "bench-password-1")
    services.add_member(actor=actor, tenant=tenant, user=owner, role="owner")
    for index in range(19):
        user = users.create_user(f"member{index}", f"member{index}@example.com", "x-pass-9876")
        role = ("operator", "reviewer", "viewer")[index % 3]
        services.add_member(actor=actor, tenant=tenant, user=user, role=role)
    for provider in ("zendesk", "slack", "jira", "generic", "zendesk"):
        webhooks.create_endpoint(actor=actor, tenant=tenant, provider=provider)
    return owner


def seed(runs: int, golden_paths: int, other_runs: int) -> dict[str, Any]:
    """The big tenant; what the pages need to address (ids) and what was seeded."""
    from agentflow.models import KnowledgeDocument
    from agentflow.services import create_agent
    from governance.audit import Actor
    from tenants import services
    from tenants.context import tenant_scope

    rng = random.Random(19)
    actor = Actor.system("bench")
    tenant = services.create_tenant(actor=actor, name="Bench pages", tier="enterprise")
    agents = [
        create_agent(actor=actor, tenant=tenant, name=name, blueprint="support_agent", config={})
        for name in ("support", "billing", "returns")
    ]
    owner = seed_people(tenant, actor)
    if other_runs:  # a neighbour whose runs interleave with ours in every index on time
        other = services.create_tenant(actor=actor, name="Neighbour", tier="enterprise")
        neighbour = create_agent(
            actor=actor, tenant=other, name="support", blueprint="support_agent", config={}
        )
        with tenant_scope(other.pk):
            seed_runs([neighbour], other_runs, rng)
        note(f"{other_runs} runs of another tenant")
    with tenant_scope(tenant.pk):
        for agent in agents:
            KnowledgeDocument.objects.create(
                agent=agent, title="Help centre", content_type="text/markdown", size_bytes=4096
            )
        made = seed_runs(agents, runs, rng)
        note(f"{len(made)} runs")
        reviews = seed_reviews(made, rng)
        note(f"{reviews} review requests")
        seed_golden_paths(agents, golden_paths, rng)
        note(f"{golden_paths} golden paths")
    seed_audit(tenant.pk, made)
    note(f"{len(made)} audit events, sealed")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with tenant_scope(tenant.pk):
        from hitl.models import HITLRequest

        request_id = HITLRequest.objects.filter(status="pending").values_list("pk", flat=True)[0]
    return {
        "tenant": tenant,
        "owner": owner,
        "run": made[len(made) // 2].pk,
        "request": request_id,
        "agent": agents[0].pk,
        "counts": {
            "runs": len(made),
            "review_requests": reviews,
            "golden_paths": golden_paths,
            "audit_events": len(made),
            "other_tenant_runs": other_runs,
        },
    }


def pages(world: dict[str, Any]) -> dict[str, str]:
    tenant = world["tenant"].pk
    return {
        "overview (24 h)": "/",
        "overview (7 d)": "/?window=7d",
        "overview (7 d, one agent)": f"/?window=7d&agent={world['agent']}",
        "overview trends fragment": "/?fragment=trends&window=7d",
        "runs": "/runs/",
        "run detail": f"/runs/{world['run']}/",
        "hitl queue": "/hitl/",
        "hitl request": f"/hitl/{world['request']}/",
        "agents": "/agents/",
        "agent detail (knowledge, playground)": f"/agents/{world['agent']}/",
        "tenants & keys": "/tenants/",
        "tenant detail": f"/tenants/{tenant}/",
        "audit": "/audit/",
        "learning (golden paths)": "/learning/",
        "webhooks": "/webhooks/",
        "members": "/members/",
    }


def time_page(client: Any, path: str, requests: int) -> dict[str, Any]:
    from django.db import connection

    for _ in range(WARMUP):
        response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}")
    # A wrapper, not connection.queries: each request resets those.
    queries: list[tuple[float, str]] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        begin = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append(((time.perf_counter() - begin) * 1000, sql))

    with connection.execute_wrapper(count):
        client.get(path)
    times = []
    for _ in range(requests):
        begin = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - begin) * 1000)
    return {
        "path": path,
        "n": requests,
        "p50_ms": round(pct(times, 50), 1),
        "p95_ms": round(pct(times, 95), 1),
        "max_ms": round(max(times), 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "bytes": len(response.content),
        "queries": len(queries),
        "sql_ms": round(sum(ms for ms, _ in queries), 1),
        "slowest_queries": [
            {"ms": round(ms, 1), "sql": sql[:SQL_CHARS]} for ms, sql in sorted(queries)[-2:][::-1]
        ],
    }


def measure(world: dict[str, Any], requests: int) -> dict[str, Any]:
    from django.test import Client

    client = Client()
    client.force_login(world["owner"])
    results = {}
    for name, path in pages(world).items():
        results[name] = time_page(client, path, requests)
        note(f"{name}: p95 {results[name]['p95_ms']} ms ({results[name]['queries']} queries)")
    return results


# Pages whose run and review queries the index comparison explains.
EXPLAINED = ("runs", "overview trends fragment", "overview (7 d, one agent)")
TABLES = ('"agentflow_run"', '"hitl_hitlrequest"')


def capture_sql(world: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(page, SQL, params) of the run and review SELECTs that one load of each page runs."""
    from django.db import connection
    from django.test import Client

    client = Client()
    client.force_login(world["owner"])
    captured: list[tuple[str, str, Any]] = []
    page = [""]

    def keep(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("SELECT") and any(f"FROM {t}" in sql for t in TABLES):
            captured.append((page[0], sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        for name in EXPLAINED:
            page[0] = name
            client.get(pages(world)[name])
    return captured


def explain(captured: list[tuple[str, str, Any]], repeat: int = 5) -> list[dict[str, Any]]:
    """Median execution time (EXPLAIN ANALYZE) and the indexes each query's plan uses."""
    from django.db import connection

    rows = []
    with connection.cursor() as cursor:
        for page, sql, params in captured:
            times, plan = [], []
            for _ in range(repeat):
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
                times.append(float(plan[0]["Execution Time"]))
            text = json.dumps(plan)
            indexes = sorted(set(re.findall(r'"Index Name": "([^"]+)"', text)))
            rows.append(
                {
                    "page": page,
                    "sql": sql[:120],
                    "execution_ms": round(statistics.median(times), 3),
                    "indexes": indexes,
                }
            )
    return rows


# The indexes issue 19 added for the dashboard (agentflow 0007, hitl 0004).
ISSUE_19_INDEXES = ("run_tenant_created", "hitl_request_breached")


def drop_indexes() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for name in ISSUE_19_INDEXES:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        cursor.execute("ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--golden-paths", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=25, help="timed GETs per page")
    parser.add_argument("--other-tenant-runs", type=int, default=10_000)
    parser.add_argument(
        "--compare-indexes",
        action="store_true",
        help="then drop the dashboard's indexes (issue 19) and measure again",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentflow-bench-pages-"))
    postgres = redis = None
    try:
        note("starting PostgreSQL, Redis, migrations")
        postgres, redis = start(tmp)
        world = seed(args.runs, args.golden_paths, args.other_tenant_runs)
        results: dict[str, Any] = {"with_indexes": measure(world, args.requests)}
        if args.compare_indexes:
            captured = capture_sql(world)
            plans = {"with_indexes": explain(captured)}
            drop_indexes()
            note(f"dropped {', '.join(ISSUE_19_INDEXES)}")
            plans["without_issue_19_indexes"] = explain(captured)
            results["without_issue_19_indexes"] = measure(world, args.requests)
            results["sql"] = plans
        from django.db import connections

        connections.close_all()
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "dashboard_pages",
        "seeded": world["counts"],
        "client": "django.test.Client, in process (no network), signed in as the owner",
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        **results,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
