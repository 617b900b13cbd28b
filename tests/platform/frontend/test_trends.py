"""The overview's trends: buckets and rates of seeded data, tenant isolation, the agent
filter, access, and bad filter input (issue 19)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentflow.models import Agent, Run, RunStatus
from frontend import trends
from governance import services as governance
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.frontend.conftest import User_, member

# A fixed "now" half past an hour: the current hourly bucket started 30 minutes ago.
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
GOLDEN = {"answer": "ok", "sources": [{"kind": "golden_path", "id": "gp-1"}]}
PLAIN = {"answer": "ok", "sources": [{"kind": "knowledge", "id": "doc#0"}]}


def run(agent: Agent, at: datetime, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "status": RunStatus.COMPLETED,
        "result": PLAIN,
        "user_id": "c",
        "input": "hello",
        **fields,
    }
    with tenant_scope(agent.tenant_id):
        return Run.objects.create(agent=agent, created_at=at, **values)


def review(the_run: Run, created: datetime, **fields: Any) -> HITLRequest:
    values: dict[str, Any] = {
        "kind": "low_confidence",
        "priority": "medium",
        "priority_rank": 2,
        "question": the_run.input,
        "required_role": "reviewer",
        "sla_deadline": created + timedelta(hours=4),
        "context": {"agent_id": str(the_run.agent_id)},
        "status": "pending",
        **fields,
    }
    with tenant_scope(the_run.tenant_id):
        return HITLRequest.objects.create(run=the_run, created_at=created, **values)


def seed(agent: Agent) -> None:
    """Three hours of an agent's traffic (see test_hourly_buckets for what it adds up to)."""
    h = timedelta(hours=1)
    # Current bucket (12:00): 3 customer runs, one answered from a golden path, and a
    # playground run that costs money but is no customer traffic.
    run(agent, NOW - timedelta(minutes=5), result=GOLDEN, tokens=40, cost_usd=Decimal("0.01"))
    run(agent, NOW - timedelta(minutes=10), tokens=60, cost_usd=Decimal("0.02"))
    run(agent, NOW - timedelta(minutes=20), status=RunStatus.PROCESSING, result=None)
    run(agent, NOW - timedelta(minutes=1), metadata={"playground": True}, cost_usd=Decimal("0.5"))
    # 10:00: two runs; one escalated (still open), the other only asked a tool approval.
    escalated = run(agent, NOW - 2 * h, status=RunStatus.AWAITING_REVIEW, result=None)
    review(escalated, NOW - 2 * h + timedelta(minutes=1))
    approval = run(agent, NOW - 2 * h + timedelta(minutes=5))
    review(approval, NOW - 2 * h + timedelta(minutes=6), kind="action")
    # 09:00: one run, queued at 09:40 and approved at 09:50, its SLA first breached at
    # 10:45 (an SLA may be breached after the fact: the sweep's view, not the clock's).
    decided = run(agent, NOW - 3 * h)
    review(
        decided,
        NOW - 3 * h + timedelta(minutes=10),
        status="approved",
        decision="approve",
        decided_at=NOW - 3 * h + timedelta(minutes=20),
        breached_at=NOW - 2 * h + timedelta(minutes=15),
    )
    # Outside the 24-hour window; its review waited until 10:10 (open at the window's start).
    old = run(agent, NOW - 30 * h)
    review(
        old,
        NOW - 30 * h,
        status="approved",
        decision="approve",
        decided_at=NOW - 2 * h - timedelta(minutes=20),
    )


def scope_of(persona: Persona, user: User_, agent: Agent | None = None) -> trends.Scope:
    return trends.Scope(user.user, persona.tenant.pk, str(agent.pk) if agent else None)


@pytest.mark.django_db
def test_hourly_buckets_and_rates(acme: Persona, agent: Agent, owner: User_) -> None:
    seed(agent)
    with tenant_scope(acme.tenant.pk):
        data = trends.series(scope_of(acme, owner), trends.WINDOWS["24h"], NOW)
    assert len(data["buckets"]) == 24
    assert data["buckets"][-1] == "2026-11-20T12:00:00Z"
    assert data["buckets"][0] == "2026-11-19T13:00:00Z"
    tail = {name: values[-4:] for name, values in data.items()}  # 09:00, 10:00, 11:00, 12:00
    assert tail["runs"] == [1, 2, 0, 3]
    assert tail["escalated"] == [1, 1, 0, 0]  # the tool approval is no escalation
    assert tail["escalation_rate"] == [1.0, 0.5, None, 0.0]
    assert tail["completed"] == [1, 1, 0, 2]
    assert tail["golden_rate"] == [0.0, 0.0, None, 0.5]
    assert tail["tokens"] == [0, 0, 0, 100]
    assert tail["cost"][-1] == "0.530000"  # the playground's spend counts
    assert tail["breaches"] == [0, 1, 0, 0]
    assert tail["decisions"] == [1, 1, 0, 0]
    assert tail["decision_p50_s"] == [600.0, (27 * 60 + 40) * 60.0, None, None]
    # Open at each bucket's end: yesterday's request until 10:10 (the 09:40 one was open
    # for ten minutes only), then the 10:31 one.
    assert data["queue_depth"] == [1] * 24
    assert sum(data["runs"]) == 6  # the run 30 hours ago is outside the window
    totals = trends.totals(data)
    assert totals["runs"] == 6
    assert totals["escalation_rate"] == round(2 / 6, 4)
    assert totals["golden_rate"] == round(1 / 4, 4)
    assert totals["cost"] == "0.530000"
    assert totals["queue_depth"] == 1


@pytest.mark.django_db
def test_daily_buckets(acme: Persona, agent: Agent, owner: User_) -> None:
    seed(agent)
    with tenant_scope(acme.tenant.pk):
        data = trends.series(scope_of(acme, owner), trends.WINDOWS["7d"], NOW)
    assert data["buckets"] == [f"2026-11-{day}T00:00:00Z" for day in range(14, 21)]
    assert data["runs"] == [0, 0, 0, 0, 0, 1, 6]  # 30 hours ago: the day before
    assert data["escalated"][-1] == 2
    assert data["queue_depth"][-1] == 1


@pytest.mark.django_db
def test_tenants_and_agents_are_kept_apart(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_
) -> None:
    seed(agent)
    seed(foreign_agent)
    other = make_agent(acme, name="billing")
    run(other, NOW - timedelta(minutes=3))
    with tenant_scope(acme.tenant.pk):
        everyone = trends.series(scope_of(acme, owner), trends.WINDOWS["24h"], NOW)
        billing = trends.series(scope_of(acme, owner, other), trends.WINDOWS["24h"], NOW)
    assert sum(everyone["runs"]) == 7  # acme's six and billing's one; none of globex's
    assert everyone["queue_depth"][-1] == 1
    assert sum(billing["runs"]) == 1
    assert billing["queue_depth"][-1] == 0
    assert sum(billing["breaches"]) == 0


@pytest.mark.django_db
def test_every_role_sees_the_trends_and_live_fragment(
    acme: Persona, agent: Agent, owner: User_, viewer: User_, reviewer: User_
) -> None:
    run(agent, datetime.now(UTC), result=GOLDEN)
    for user in (owner, viewer, reviewer):
        page = user.get("/")
        assert page.status_code == 200
        for chart in ("runs", "golden", "cost", "sla", "queue"):
            assert f'data-chart="{chart}"'.encode() in page.content
        assert b'id="trends-data"' in page.content
        assert b"vendor/chart.js/chart.umd.min.js" in page.content
        body = user.get("/", fragment="trends", window="7d", agent=str(agent.pk)).json()
        assert body["window"] == "7d"
        assert body["agent"] == str(agent.pk)
        assert body["totals"]["runs"] == 1
        assert body["totals"]["golden_rate"] == 1.0
        assert body["offline"] is True  # the support agent runs on the offline provider
    assert b'data-testid="trend-cost-offline"' in owner.get("/").content


@pytest.mark.django_db
def test_recent_escalations_and_breaches(acme: Persona, agent: Agent, owner: User_) -> None:
    now = datetime.now(UTC)
    late = run(agent, now - timedelta(hours=2), status=RunStatus.AWAITING_REVIEW, result=None)
    review(late, now - timedelta(hours=2), breached_at=now - timedelta(minutes=30))
    fresh = run(agent, now - timedelta(minutes=1), input="Where is my refund?")
    review(fresh, now, escalation_reason="low confidence 0.31")
    body = owner.get("/", fragment="trends").json()
    escalations = body["recent"]["escalations"]
    assert [row["question"] for row in escalations] == ["Where is my refund?", "hello"]
    assert escalations[0]["reason"] == "low confidence 0.31"
    assert escalations[0]["agent"] == agent.name
    assert [row["run_id"] for row in body["recent"]["breaches"]] == [str(late.pk)]
    page = owner.get("/").content.decode()
    assert "Where is my refund?" in page
    assert f'href="/hitl/{escalations[0]["id"]}/"' in page


@pytest.mark.django_db
def test_bad_filters_are_named_and_foreign_agents_refused(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, owner: User_
) -> None:
    bad = owner.get("/", fragment="trends", window="1y")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"window"}
    foreign = owner.get("/", fragment="trends", agent=str(foreign_agent.pk))
    assert foreign.status_code == 400
    assert set(foreign.json()["errors"]) == {"agent"}
    page = owner.get("/", window="1y", agent="not-an-id")
    assert page.status_code == 400
    assert b'data-testid="trend-errors"' in page.content
    assert b'data-window="24h"' in page.content  # the page falls back to the defaults


@pytest.mark.django_db
def test_a_member_restricted_to_one_agent_sees_only_its_trends(acme: Persona, agent: Agent) -> None:
    other = make_agent(acme, name="billing")
    run(agent, datetime.now(UTC))
    run(other, datetime.now(UTC))
    restricted = member(acme.tenant, "rob", "viewer")
    governance.assign_role(
        actor=ACTOR, tenant=acme.tenant, user=restricted.user, role="viewer", agents=[str(agent.pk)]
    )
    body = restricted.get("/", fragment="trends").json()
    assert body["totals"]["runs"] == 1
    assert restricted.get("/", fragment="trends", agent=str(other.pk)).status_code == 400


@pytest.mark.django_db
def test_anonymous_is_sent_to_sign_in(client: Any) -> None:
    response = client.get("/", {"fragment": "trends"})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_a_platform_admin_sees_the_selected_tenants_trends(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent, admin: User_
) -> None:
    run(agent, datetime.now(UTC))
    run(foreign_agent, datetime.now(UTC))
    run(foreign_agent, datetime.now(UTC))
    admin.post("/tenant/select/", {"tenant_id": str(globex.tenant.pk)})
    page = admin.get("/")
    assert b'data-testid="tenants-overview"' in page.content  # the cards: every tenant
    label = re.search(rb'data-testid="trends-label">([^<]+)<', page.content)
    assert label is not None
    assert label.group(1).startswith(b"Globex,")
    assert admin.get("/", fragment="trends").json()["totals"]["runs"] == 2


@pytest.mark.django_db
def test_the_chart_library_is_served_from_the_apps_own_static_files(owner: User_) -> None:
    """No CDN: the page's scripts are all local, and the vendored file is the pinned one
    whose checksum its README records."""
    from django.contrib.staticfiles import finders

    page = owner.get("/").content.decode()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert "/static/frontend/vendor/chart.js/chart.umd.min.js" in scripts
    assert all(src.startswith("/static/") for src in scripts), scripts
    found = finders.find("frontend/vendor/chart.js/chart.umd.min.js")
    assert isinstance(found, str)
    library = Path(found)
    assert library.read_text(encoding="utf-8").startswith("/*!\n * Chart.js v4.6.1\n")
    readme = (library.parent / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(library.read_bytes()).hexdigest() in readme
    assert "sourceMappingURL" not in library.read_text(encoding="utf-8")
