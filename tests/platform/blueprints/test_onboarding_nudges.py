"""Onboarding nudges on a schedule (issue 18): the beat records each stalled user's stall
once as an ``onboarding.stalled`` activity event, per tenant, on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings

from agentflow.blueprints.onboarding import DjangoProgressStore
from agentflow.blueprints.onboarding_nudges import NUDGE_KIND, record_stalls
from agentflow.server.celery import app
from agentflow.services import create_agent
from agentflow.tasks import onboarding_nudges_task
from learning.models import ActivityEvent
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona, make_persona
from tests.platform.blueprints.test_onboarding import CHECKLIST, _agent

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOUR = 3600.0


def _journey(
    persona: Persona,
    agent_id: str,
    user: str,
    step: str,
    hours_on_it: float,
    at: datetime = NOW,
    **extra: Any,
) -> None:
    """A user's stored progress at `at`, saved through the agent's own progress store."""
    started = at.timestamp() - hours_on_it * HOUR
    progress = {
        "current": step,
        "completed": [] if step == "connect_helpdesk" else ["connect_helpdesk"],
        "started_at": started - HOUR,
        "step_started_at": started,
        "updated_at": started,
        "finished_at": None,
        "nudged_at": None,
        **extra,
    }
    store = DjangoProgressStore(agent_id)
    with tenant_scope(persona.tenant.pk):
        revision = int((async_to_sync(store.load)(user) or {}).get("revision") or 0)
        assert async_to_sync(store.save)(user, progress, revision=revision)


def _events(persona: Persona) -> list[ActivityEvent]:
    with tenant_scope(persona.tenant.pk):
        return list(ActivityEvent.objects.filter(kind=NUDGE_KIND).order_by("created_at"))


def test_each_stall_is_recorded_once(owner: Persona, outsider: Persona) -> None:
    agent_id = _agent(owner)  # nudge_after_hours: 24
    _journey(owner, agent_id, "maria", "connect_helpdesk", 30)
    _journey(owner, agent_id, "li", "connect_helpdesk", 5)  # not stalled yet
    _journey(owner, agent_id, "ada", "import_articles", 40, finished_at=NOW.timestamp())

    assert record_stalls(NOW) == 1
    assert record_stalls(NOW + timedelta(minutes=15)) == 0, "a second sweep nudges no one"
    assert record_stalls(NOW + timedelta(hours=6)) == 0, "maria's stall is the same stall"

    [event] = _events(owner)
    assert event.source == "internal"
    assert event.payload == {
        "agent_id": agent_id,
        "agent_name": "onboarding",
        "user_id": "maria",
        "step": "connect_helpdesk",
        "step_title": "Connect your helpdesk",
        "step_started_at": (NOW - timedelta(hours=30)).isoformat(),
        "stalled_hours": 30.0,
    }
    listed = owner.get(f"/api/v1/activity?kind={NUDGE_KIND}").json()["results"]
    assert [item["id"] for item in listed] == [str(event.pk)]
    assert outsider.get(f"/api/v1/activity?kind={NUDGE_KIND}").json()["results"] == []
    assert outsider.get(f"/api/v1/activity/{event.pk}").status_code == 404


def test_a_new_stall_of_the_same_user_is_nudged_again(owner: Persona) -> None:
    agent_id = _agent(owner)
    _journey(owner, agent_id, "maria", "connect_helpdesk", 30)
    assert record_stalls(NOW) == 1

    # Maria finished the first step 26 hours ago and is stuck on the second one.
    _journey(owner, agent_id, "maria", "import_articles", 26)
    assert record_stalls(NOW) == 1
    assert record_stalls(NOW) == 0

    assert [(e.payload["user_id"], e.payload["step"]) for e in _events(owner)] == [
        ("maria", "connect_helpdesk"),
        ("maria", "import_articles"),
    ]


def test_each_tenant_gets_its_own_users_stalls_and_a_suspended_one_none(
    owner: Persona, outsider: Persona
) -> None:
    mine, theirs = _agent(owner), _agent(outsider)
    _journey(owner, mine, "maria", "connect_helpdesk", 30)
    _journey(outsider, theirs, "maria", "connect_helpdesk", 50)  # the same user id elsewhere
    suspended = make_persona("Initech", tier="professional")
    dormant = create_agent(
        actor=ACTOR,
        tenant=suspended.tenant,
        name="onboarding",
        blueprint="onboarding_agent",
        config=CHECKLIST,
    )
    _journey(suspended, str(dormant.pk), "bob", "connect_helpdesk", 30)
    suspended.tenant.status = "suspended"
    suspended.tenant.save(update_fields=["status"])

    assert record_stalls(NOW) == 2

    [own] = _events(owner)
    [foreign] = _events(outsider)
    assert (own.payload["agent_id"], own.payload["stalled_hours"]) == (mine, 30.0)
    assert (foreign.payload["agent_id"], foreign.payload["stalled_hours"]) == (theirs, 50.0)
    assert _events(suspended) == []


def test_beat_runs_the_sweep_on_its_own_schedule(owner: Persona) -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["maintenance.onboarding_nudges"]
    assert entry["task"] in app.tasks
    assert entry["schedule"] == 900.0
    agent_id = _agent(owner)
    # A real stall of the wall clock's now, as the beat sees it.
    _journey(owner, agent_id, "maria", "connect_helpdesk", 30, at=datetime.now(UTC))

    assert onboarding_nudges_task() == 1
    assert onboarding_nudges_task() == 0
    assert len(_events(owner)) == 1
