"""Playbook extraction from synthetic traces: thresholds, ordering, versions, retirement,
and the suggestion a run of the category is given (visible in its trace)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from agentflow import services as run_services
from agentflow.models import Agent, AgentSession, Run
from governance.audit import Actor
from learning import playbooks
from learning.models import Feedback, Playbook
from learning.stores import DjangoProceduralStore
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
CATEGORY = "PASSWORD_RESET"
ARTICLE = {"kind": "knowledge", "id": "doc#0", "title": "Resetting your password"}
SETTINGS = {
    "PLAYBOOK_MIN_SAMPLES": 5,
    "PLAYBOOK_MIN_SUCCESS_RATE": 0.8,
    "PLAYBOOK_MIN_STEP_SUPPORT": 0.6,
    "PLAYBOOK_WINDOW_RUNS": 500,
}


def _settings(**overrides: Any) -> Any:
    from django.conf import settings

    return override_settings(AGENTFLOW={**settings.AGENTFLOW, **SETTINGS, **overrides})


def _run(
    agent: Agent,
    *,
    sources: list[dict[str, Any]],
    status: str = "completed",
    escalated: bool = False,
    decision: str | None = None,
    tools: list[str] | None = None,
    category: str = CATEGORY,
) -> Run:
    result: dict[str, Any] = {
        "content": "Open Settings > Security.",
        "intent": category,
        "escalated": escalated,
        "sources": sources,
        "metadata": {"handler": "GenerativeHandler", "tools": tools or []},
    }
    if decision:
        result["review"] = {"decision": decision}
    session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer")
    return Run.objects.create(
        agent=agent,
        session=session,
        user_id="customer",
        input="reset?",
        status=status,
        result=result,
    )


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def agent(owner: Persona) -> Agent:
    return make_agent(owner)


def test_steps_common_to_most_successful_traces_are_kept_in_their_order(
    owner: Persona, agent: Agent
) -> None:
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(4):
            _run(agent, sources=[ARTICLE], tools=["lookup_account"])
        # One success took a detour (an extra article); it is not common, so not a step.
        _run(agent, sources=[ARTICLE, {"kind": "memory", "id": "m1", "title": "old case"}])
        # One failure (the reviewer rewrote the answer): 5 of 6 succeeded, 0.83 >= 0.8.
        _run(agent, sources=[ARTICLE], escalated=True, decision="edit")

        done = playbooks.extract(agent, CATEGORY, actor=ACTOR)

    assert done.outcome == "created"
    assert (done.successes, done.total) == (5, 6)
    assert done.success_rate == pytest.approx(5 / 6)
    playbook = done.playbook
    assert playbook is not None
    assert playbook.version == 1
    assert playbook.steps == [
        f"classify:{CATEGORY}",
        "consult:knowledge:Resetting your password",
        "tool:lookup_account",  # in 4 of 5 successful traces: support 0.8 >= 0.6
        "answer:GenerativeHandler",
        "deliver",
    ]
    assert playbook.transitions == [
        [playbook.steps[i], playbook.steps[i + 1]] for i in range(len(playbook.steps) - 1)
    ]
    assert (playbook.sample_count, playbook.total_count) == (5, 6)


def test_thresholds_are_respected(owner: Persona, agent: Agent) -> None:
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(4):
            _run(agent, sources=[ARTICLE])
        too_few = playbooks.extract(agent, CATEGORY, actor=ACTOR)
        assert too_few.outcome == "too_few_samples"
        assert too_few.successes == 4

        fifth = _run(agent, sources=[ARTICLE])
        # Low feedback makes a completed run a failure: 4 of 5 → still 0.8.
        Feedback.objects.create(
            tenant=owner.tenant, run=fifth, kind="thumbs", thumbs_up=False, score=0.0
        )
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).outcome == "too_few_samples"

        _run(agent, sources=[ARTICLE])  # 5 successes of 6
        _run(agent, sources=[], status="failed")  # 5 of 7 = 0.71 < 0.8
        low = playbooks.extract(agent, CATEGORY, actor=ACTOR)
        assert low.outcome == "low_success_rate"
        assert (low.successes, low.total) == (5, 7)

        # Cancelled and unsettled runs are not counted at all.
        _run(agent, sources=[], status="cancelled")
        _run(agent, sources=[], status="awaiting_review", escalated=True)
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).total == 7

        # Other categories' traces are not this category's.
        for _ in range(10):
            _run(agent, sources=[ARTICLE], category="BILLING")
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).outcome == "low_success_rate"
        assert Playbook.objects.count() == 0


def test_versions_and_retirement(owner: Persona, agent: Agent) -> None:
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(5):
            _run(agent, sources=[ARTICLE])
        first = playbooks.extract(agent, CATEGORY, actor=ACTOR)
        assert first.outcome == "created"
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).outcome == "unchanged"

        # The traces change: every recent success now calls a tool first.
        for _ in range(10):
            _run(agent, sources=[ARTICLE], tools=["lookup_account"])
        second = playbooks.extract(agent, CATEGORY, actor=ACTOR)
        assert second.outcome == "created"
        assert second.playbook is not None
        assert second.playbook.version == 2
        assert "tool:lookup_account" in second.playbook.steps
        assert first.playbook is not None
        first.playbook.refresh_from_db()
        assert first.playbook.status == "superseded"
        assert playbooks.suggestion(agent.pk, CATEGORY) == second.playbook

        retired = playbooks.retire(actor=ACTOR, playbook=second.playbook)
        assert retired.status == "retired"
        assert retired.retired_at is not None
        assert playbooks.suggestion(agent.pk, CATEGORY) is None
        # The same traces do not bring a retired playbook back.
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).outcome == "retired"
        assert Playbook.objects.count() == 2


# The pipeline's stores read from their own threads' connections: committed rows only.
@pytest.mark.django_db(transaction=True)
def test_a_run_of_the_category_is_given_the_playbook_and_its_trace_names_it(
    owner: Persona, agent: Agent
) -> None:
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(5):
            _run(agent, sources=[ARTICLE])
        playbook = playbooks.extract(agent, CATEGORY, actor=ACTOR).playbook
        assert playbook is not None
        session = AgentSession.objects.create(agent=agent, user_id="customer-2")
        run = Run.objects.create(
            agent=agent, session=session, user_id="customer-2", input="how do I reset my password"
        )
        run_services.execute_run(str(run.pk))
        run.refresh_from_db()
    assert run.result["intent"] == CATEGORY
    given = run.result["metadata"]["playbook"]
    assert given["id"] == str(playbook.pk)
    assert given["version"] == 1
    assert given["steps"] == playbook.steps


def test_playbooks_of_another_tenant_are_never_suggested(owner: Persona, agent: Agent) -> None:
    other = make_persona("Globex", tier="professional")
    other_agent = make_agent(other)
    with tenant_scope(owner.tenant.pk), _settings():
        for _ in range(5):
            _run(agent, sources=[ARTICLE])
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).outcome == "created"
    with tenant_scope(other.tenant.pk):
        assert playbooks.suggestion(other_agent.pk, CATEGORY) is None
        assert playbooks.suggestion(agent.pk, CATEGORY) is None  # even naming A's agent
        # The run path's store reads it in its own statement: the same rule, the same scope.
        assert DjangoProceduralStore(agent.pk)._get(CATEGORY) is None
    with tenant_scope(owner.tenant.pk):
        suggested = DjangoProceduralStore(agent.pk)._get(CATEGORY)
        active = playbooks.suggestion(agent.pk, CATEGORY)
    assert suggested is not None
    assert active is not None
    assert (suggested.id, suggested.version, list(suggested.steps)) == (
        str(active.pk),
        active.version,
        active.steps,
    )
