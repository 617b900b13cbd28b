"""The learning page: golden paths and playbooks by role, curation, and live golden paths.

Applying ``learning.golden_path.*`` events to the page's rows with the rules of
frontend/static/frontend/learning.js (mirrored below) equals a fresh load of the fragment;
another tenant's members never get them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils.html import escape

from agentflow.models import Agent
from governance.audit import Actor
from learning import golden_paths
from learning.models import GoldenPath, Playbook
from learning.playbook_fsm import planner_of, planner_yaml
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.frontend.test_live import collect, connect, fragment

ACTOR = Actor.system("tests")
Row = dict[str, Any]


def _learn(agent: Agent, question: str, answer: str = "Do this.") -> GoldenPath:
    with tenant_scope(agent.tenant_id):
        path = golden_paths.record_outcome(
            actor=ACTOR, agent=agent, question=question, answer=answer, source="edited", score=1.0
        )
    assert path is not None
    return path


def _deactivate(path: GoldenPath) -> None:
    with tenant_scope(path.tenant_id):
        golden_paths.set_active(actor=ACTOR, path=path, active=False)


def _playbook(agent: Agent) -> Playbook:
    with tenant_scope(agent.tenant_id):
        return Playbook.objects.create(
            agent=agent,
            category="BILLING",
            version=1,
            name="BILLING v1",
            steps=["classify:BILLING", "consult:knowledge:Refunds", "deliver"],
            sample_count=20,
            total_count=21,
            success_rate=0.95,
        )


# --- the rules of learning.js, in Python ---


def _time(value: str | None) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else datetime.min


def apply_golden_path(state: list[Row], path: Row, show: str, limit: int = 100) -> list[Row]:
    rows = {row["id"]: row for row in state}
    current = rows.get(path["id"])
    if current is not None and _time(path["updated_at"]) < _time(current["updated_at"]):
        return state
    keep = {"active": path["is_active"], "inactive": not path["is_active"], "all": True}[show]
    if keep:
        rows[path["id"]] = path
    else:
        rows.pop(path["id"], None)
    ordered = sorted(rows.values(), key=lambda r: r["id"], reverse=True)
    ordered.sort(key=lambda r: _time(r["updated_at"]), reverse=True)
    return ordered[:limit]


@pytest.mark.django_db
def test_every_role_sees_golden_paths_and_playbooks_but_only_reviewers_curate(
    acme: Persona, agent: Agent, viewer: User_, reviewer: User_, operator: User_
) -> None:
    path, playbook = _learn(agent, "How do I change my email?"), _playbook(agent)
    page = viewer.get("/learning/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-golden-path-id="{path.pk}"' in html
    assert f'data-playbook-id="{playbook.pk}"' in html
    assert "How do I change my email?" in html
    assert 'data-action="toggle"' not in html  # viewers read only
    assert 'data-nav="learning"' in html

    refused = viewer.post("/learning/", {"action": "deactivate", "id": str(path.pk)})
    assert refused.status_code == 403
    path.refresh_from_db()
    assert path.is_active

    done = reviewer.post("/learning/", {"action": "deactivate", "id": str(path.pk)})
    assert done.status_code == 302
    path.refresh_from_db()
    assert not path.is_active
    assert f'data-golden-path-id="{path.pk}"' not in reviewer.get("/learning/").content.decode()
    assert (
        f'data-golden-path-id="{path.pk}"'
        in reviewer.get("/learning/?show=inactive").content.decode()
    )

    assert (
        reviewer.post("/learning/", {"action": "retire", "id": str(playbook.pk)}).status_code == 403
    )
    assert (
        operator.post("/learning/", {"action": "retire", "id": str(playbook.pk)}).status_code == 302
    )
    playbook.refresh_from_db()
    assert playbook.status == "retired"


@pytest.mark.django_db
def test_another_tenants_golden_paths_are_invisible_and_404(
    acme: Persona, agent: Agent, foreign_agent: Agent, operator: User_
) -> None:
    theirs = _learn(foreign_agent, "Globex secret question")
    html = operator.get("/learning/").content.decode()
    assert "Globex secret question" not in html
    for bad in (str(theirs.pk), "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        assert operator.post("/learning/", {"action": "deactivate", "id": bad}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_active


@pytest.mark.django_db(transaction=True)
async def test_golden_path_state_from_events_equals_a_fresh_load(
    acme: Persona, globex: Persona, agent: Agent, foreign_agent: Agent
) -> None:
    owner = await sync_to_async(member)(acme.tenant, "olga", "owner")
    outsider = await sync_to_async(member)(globex.tenant, "gert", "owner")
    first = await sync_to_async(_learn)(agent, "How do I change my email?")
    state = (await fragment(owner, "/learning/?fragment=rows"))["rows"]
    assert [row["id"] for row in state] == [str(first.pk)]
    socket, other = await connect(owner), await connect(outsider)

    second = await sync_to_async(_learn)(agent, "Do you ship to Canada?")
    await sync_to_async(_learn)(agent, "How do I change my email?", "Settings > Profile.")  # merge
    await sync_to_async(_deactivate)(second)
    await sync_to_async(_learn)(foreign_agent, "Globex only")

    def learnt(events: list[Row]) -> bool:
        kinds = [e["type"] for e in events if e["type"].startswith("learning.")]
        return len(kinds) >= 3  # created, merged (updated), deactivated (updated)

    events = await collect(socket, learnt)
    for event in events:
        if event["type"].startswith("learning.golden_path."):
            state = apply_golden_path(state, event["golden_path"], "active")
    fresh = (await fragment(owner, "/learning/?fragment=rows"))["rows"]
    assert state == fresh
    assert [row["answer"] for row in fresh] == ["Settings > Profile."]
    all_rows = (await fragment(owner, "/learning/?fragment=rows&show=all"))["rows"]
    assert {row["id"] for row in all_rows} == {str(first.pk), str(second.pk)}

    # The other tenant's member got its own golden path's event and nothing of Acme's.
    theirs = await collect(other, lambda e: any(x["type"].startswith("learning.") for x in e))
    questions = {e["golden_path"]["question"] for e in theirs if "golden_path" in e}
    assert questions == {"Globex only"}
    await socket.disconnect()
    await other.disconnect()


@pytest.mark.django_db
def test_a_playbook_shows_the_fsm_an_agent_can_run(
    acme: Persona, agent: Agent, viewer: User_
) -> None:
    playbook = _playbook(agent)

    html = viewer.get("/learning/").content.decode()

    assert 'data-testid="playbook-planner"' in html
    assert '<span class="badge">valid</span>' in html
    expected = planner_yaml(planner_of(playbook))
    assert "initial_state" in expected
    assert escape(expected) in html
