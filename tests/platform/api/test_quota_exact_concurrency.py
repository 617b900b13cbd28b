"""Counted run quotas stay exact without the tenant row lock (issue 15).

A 202 claims its run in Redis against what PostgreSQL has committed (``agentflow.run_quotas``).
N simultaneous 202s at a quota of K, from threads and from processes, get exactly K accepted;
a failed 202 gives its claim back; a claim whose run never commits stops counting after the
grace; a settled run frees its slot; with Redis down the locked PostgreSQL count takes over.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import Client

from agentflow import run_quotas, services
from agentflow.core.api.exceptions import ContractError
from agentflow.models import Agent, Run, RunStatus
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import UsageDay
from tests.platform.api.conftest import ACTOR, Persona, make_agent, make_persona
from tests.platform.api.test_sql_budget import by_purpose, captured_sql

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]
ASYNC = {"Prefer": "respond-async"}


def _limit(persona: Persona, **overrides: int | None) -> None:
    """Only the named counted quotas: the others lifted, so they cannot refuse first."""
    lifted: dict[str, int | None] = {
        "requests_per_minute": None,
        "requests_per_minute_per_key": None,
        "concurrent_runs": None,
        "runs_per_month": None,
    }
    tenant_services.update_quotas(
        actor=ACTOR, tenant=persona.tenant, tier=None, overrides={**lifted, **overrides}
    )
    persona.tenant.refresh_from_db()


def _posts(persona: Persona, agent: Agent, count: int) -> list[Any]:
    """``count`` run POSTs released together from as many threads, one client each."""
    barrier = threading.Barrier(count)

    def one(index: int) -> Any:
        client = Client(raise_request_exception=False)
        try:
            barrier.wait(timeout=30)
            return client.post(
                f"/api/v1/agents/{agent.pk}/runs",
                {"user_id": f"user-{index}", "message": "hi"},
                content_type="application/json",
                headers={"Authorization": f"Bearer {persona.key}", **ASYNC},
            )
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def _post(persona: Persona, agent: Agent, user_id: str = "u") -> Any:
    return persona.post(
        f"/api/v1/agents/{agent.pk}/runs", {"user_id": user_id, "message": "hi"}, headers=ASYNC
    )


def _runs(persona: Persona) -> int:
    return Run.unscoped.filter(tenant=persona.tenant).count()


@pytest.fixture
def acme() -> Persona:
    return make_persona("Acme", tier="professional")


def test_concurrent_runs_admits_exactly_the_limit_from_threads(acme: Persona) -> None:
    """24 simultaneous POSTs at concurrent_runs = 6: six 202s, eighteen 429s naming it."""
    agent = make_agent(acme)
    _limit(acme, concurrent_runs=6)
    responses = _posts(acme, agent, 24)
    assert Counter(r.status_code for r in responses) == {202: 6, 429: 18}
    refused = [r.json() for r in responses if r.status_code == 429]
    assert {body["limit"] for body in refused} == {"concurrent_runs"}
    assert _runs(acme) == 6


def test_a_settled_run_frees_its_slot_and_a_resumed_one_takes_it_again(acme: Persona) -> None:
    """concurrent_runs = 1: the slot is free once the run settles, held again when a review
    sends it back to pending (PostgreSQL's committed count, not only the claims)."""
    agent = make_agent(acme)
    _limit(acme, concurrent_runs=1)
    first = _post(acme, agent)
    assert first.status_code == 202
    assert _post(acme, agent).status_code == 429
    Run.unscoped.filter(pk=first.json()["id"]).update(status=RunStatus.AWAITING_REVIEW)
    second = _post(acme, agent)
    assert second.status_code == 202, second.json()
    Run.unscoped.filter(pk=second.json()["id"]).update(status=RunStatus.COMPLETED)
    Run.unscoped.filter(pk=first.json()["id"]).update(status=RunStatus.PENDING)
    refused = _post(acme, agent)
    assert (refused.status_code, refused.json()["limit"]) == (429, "concurrent_runs")


def test_a_failed_202_gives_its_claim_back(acme: Persona) -> None:
    """runs_per_month = 1: a 202 whose transaction fails after the claim leaves no run and
    no usage, and the month's one run is still there for the next POST."""
    agent = make_agent(acme)
    _limit(acme, runs_per_month=1)

    def broken(run_id: Any) -> None:
        raise RuntimeError("the waiter could not subscribe")

    request = services.RunRequest(user_id="u", message="hi")
    with pytest.raises(RuntimeError):
        services.start_run(actor=ACTOR, agent=agent, request=request, on_created=broken)
    assert _runs(acme) == 0
    assert _claims(acme) == 0
    assert _post(acme, agent).status_code == 202
    refused = _post(acme, agent)
    assert (refused.status_code, refused.json()["limit"]) == (429, "runs_per_month")
    assert UsageDay.unscoped.filter(tenant=acme.tenant).values_list("runs", flat=True).get() == 1


def test_a_claim_whose_run_never_commits_stops_counting_after_the_grace(
    acme: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's outer transaction rolls back after start_run returned: the claim holds
    the month's last run until the grace has passed, then the quota is whole again."""
    agent = make_agent(acme)
    _limit(acme, runs_per_month=1)
    request = services.RunRequest(user_id="u", message="hi")

    def caller_fails() -> None:
        with transaction.atomic():
            services.start_run(actor=ACTOR, agent=agent, request=request)
            raise RuntimeError("the caller's own work failed")

    with pytest.raises(RuntimeError):
        caller_fails()
    assert (_runs(acme), _claims(acme)) == (0, 1)
    assert _post(acme, agent).status_code == 429  # it may still be committing
    monkeypatch.setattr(run_quotas, "CLAIM_GRACE_MS", 0)
    time.sleep(0.01)
    assert _post(acme, agent).status_code == 202
    assert _runs(acme) == 1


def test_a_202_that_read_before_a_claim_committed_still_counts_it(
    acme: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs_per_month = 2. X snapshots run M's claim and reads PostgreSQL before M commits;
    then M commits and Z, which sees M committed, takes the second run. X must still count M
    (its claim outlives its commit by the grace) and be refused: two runs, not three."""
    agent = Agent.unscoped.select_related("tenant").get(pk=make_agent(acme).pk)
    _limit(acme, runs_per_month=2)
    agent.tenant.refresh_from_db()
    m_claimed, m_go, x_read, x_go = (threading.Event() for _ in range(4))
    real_read = run_quotas._read

    def read(*args: Any, **kwargs: Any) -> Any:
        committed = real_read(*args, **kwargs)
        if threading.current_thread().name == "X" and not x_read.is_set():
            x_read.set()
            assert x_go.wait(30)
        return committed

    monkeypatch.setattr(run_quotas, "_read", read)

    def hold(run_id: Any) -> None:
        m_claimed.set()
        assert m_go.wait(30)

    def start(on_created: Callable[[Any], None] | None = None) -> str:
        request = services.RunRequest(user_id=threading.current_thread().name, message="hi")
        try:
            services.start_run(actor=ACTOR, agent=agent, request=request, on_created=on_created)
            return "202"
        except ContractError as exc:
            return f"{exc.status_code}:{exc.extra['limit']}"
        finally:
            connections.close_all()

    outcomes: dict[str, str] = {}

    def named(name: str, on_created: Callable[[Any], None] | None = None) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: outcomes.__setitem__(name, start(on_created)), name=name
        )
        thread.start()
        return thread

    m = named("M", hold)
    assert m_claimed.wait(30)
    x = named("X")
    assert x_read.wait(30)
    m_go.set()
    m.join(30)
    z = named("Z")
    z.join(30)
    x_go.set()
    x.join(30)
    assert outcomes == {"M": "202", "Z": "202", "X": "429:runs_per_month"}
    assert _runs(acme) == 2


def test_no_tenant_row_lock_and_redis_down_falls_back_to_the_locked_count(
    acme: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis the 202 takes no tenant row lock; without it, today's exact locked count."""
    agent = make_agent(acme)
    _limit(acme, runs_per_month=2)
    with captured_sql() as statements:
        assert _post(acme, agent).status_code == 202
    assert not any("FOR NO KEY UPDATE" in sql for sql in statements), by_purpose(statements)

    def unreachable(cls: Any) -> Any:
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(run_quotas._Scripts, "get", classmethod(unreachable))
    with captured_sql() as statements:
        assert _post(acme, agent).status_code == 202
    assert any("FOR NO KEY UPDATE" in sql for sql in statements), by_purpose(statements)
    refused = _post(acme, agent)
    assert (refused.status_code, refused.json()["limit"]) == (429, "runs_per_month")
    assert _runs(acme) == 2


def test_one_tenants_claims_do_not_count_for_another(acme: Persona) -> None:
    """Two tenants at concurrent_runs = 1 each: each gets its own run."""
    other = make_persona("Globex", tier="professional")
    for persona in (acme, other):
        _limit(persona, concurrent_runs=1)
    agents = {persona.tenant.pk: make_agent(persona) for persona in (acme, other)}
    assert _post(acme, agents[acme.tenant.pk]).status_code == 202
    assert _post(other, agents[other.tenant.pk]).status_code == 202
    assert _post(acme, agents[acme.tenant.pk]).status_code == 429


@pytest.mark.timeout(180)
def test_runs_per_month_admits_exactly_the_limit_from_processes(
    acme: Persona, tmp_path: Path
) -> None:
    """Four processes of 8 threads (32 simultaneous 202s) at runs_per_month = 11: exactly 11
    runs, 11 counted in the month's usage, the other 21 refused naming runs_per_month."""
    agent = make_agent(acme)
    _limit(acme, runs_per_month=11)
    outcomes = _from_processes(acme, agent, tmp_path, processes=4, threads=8)
    assert Counter(code for code, _ in outcomes) == {202: 11, 429: 21}
    assert {limit for code, limit in outcomes if code == 429} == {"runs_per_month"}
    assert _runs(acme) == 11
    with tenant_scope(acme.tenant.pk):
        assert tenant_services.usage_this_month(acme.tenant.pk)["runs"] == 11


def _claims(persona: Persona) -> int:
    """The tenant's claims not yet seen committed by a later 202."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    return int(client.zcard(f"agentflow:runclaims:{persona.tenant.pk}"))


def _from_processes(
    persona: Persona, agent: Agent, folder: Path, *, processes: int, threads: int
) -> list[tuple[int, str]]:
    env = {**os.environ, "QUOTA_TEST_DB": connection.settings_dict["NAME"]}
    command: Callable[[int], list[str]] = lambda n: [  # noqa: E731
        sys.executable,
        "-m",
        "tests.platform.api.quota_worker",
        persona.key,
        str(agent.pk),
        str(threads),
        str(n),
        str(folder),
    ]
    workers = [
        subprocess.Popen(command(n), cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for n in range(processes)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(folder.glob("ready-*"))) < processes:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.05)
        (folder / "go").touch()
        outcomes: list[tuple[int, str]] = []
        for worker in workers:
            stdout, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0, stdout[-2000:]
            for line in stdout.split():
                code, _, limit = line.partition(":")
                outcomes.append((int(code), limit))
        return outcomes
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
