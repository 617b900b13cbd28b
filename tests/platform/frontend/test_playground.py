"""The playground on an agent's page (issue 19): a message as a test user through the API's
own path, answered on the page, marked as a playground run and never learnt from."""

from __future__ import annotations

import re

import pytest

from agentflow import orchestration
from agentflow.models import Agent, Run, RunStatus
from frontend import playground
from frontend.queries import tenant_metrics
from governance.audit import Actor
from hitl import services as hitl_services
from learning import loop, playbooks
from learning.models import GoldenPath
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.hitl.conftest import ALWAYS_REVIEW, escalated_run, review_of

PLAN_NODES = re.compile(rb'data-plan-node="([^"]*)"')


def playground_runs(agent: Agent) -> list[Run]:
    with tenant_scope(agent.tenant_id):
        return list(Run.objects.filter(agent=agent, metadata__playground=True))


@pytest.mark.django_db(transaction=True)  # the worker's connection sees committed rows
def test_an_operator_tries_the_agent_and_sees_everything_the_run_did(
    celery_worker_app: object, acme: Persona, agent: Agent, operator: User_
) -> None:
    sent = operator.post(
        f"/agents/{agent.pk}/", {"form": "playground", "message": "How do I reset my password?"}
    )
    assert sent.status_code == 302
    (run,) = playground_runs(agent)
    assert sent["Location"] == f"/agents/{agent.pk}/?run={run.pk}#playground"
    assert run.user_id == "playground:otto"
    assert run.metadata == {"playground": True}
    assert run.status == RunStatus.COMPLETED  # waited for, as the API's Prefer: wait does
    assert run.result is not None

    page = operator.get(f"/agents/{agent.pk}/", run=str(run.pk)).content.decode()
    shown = page.split('data-testid="playground-run"', 1)[1]
    assert run.result["content"] in shown.replace("&#x27;", "'")
    assert f'data-testid="playground-intent">{run.result["intent"]}<' in shown
    assert f'data-testid="playground-confidence">{run.result["confidence"]:.3f}<' in shown
    for source in run.result["sources"]:
        assert source["title"] in shown
    nodes = [n.decode() for n in PLAN_NODES.findall(shown.encode())]
    assert nodes == [step["node"] for step in run.result["plan_path"]]
    assert nodes[0] == "classify"
    assert "offline provider: free" in shown

    # A second message continues the same test conversation; both are listed.
    operator.post(f"/agents/{agent.pk}/", {"form": "playground", "message": "Thanks!"})
    runs = playground_runs(agent)
    assert len(runs) == 2
    assert len({r.session_id for r in runs}) == 1
    assert (
        'data-testid="playground-history"' in operator.get(f"/agents/{agent.pk}/").content.decode()
    )


def test_who_may_use_the_playground_and_bad_input(
    acme: Persona, globex: Persona, agent: Agent, viewer: User_, reviewer: User_, operator: User_
) -> None:
    for reader in (viewer, reviewer):  # they read the page; starting runs is `write`
        page = reader.get(f"/agents/{agent.pk}/")
        assert b'data-testid="playground"' in page.content
        assert b'data-testid="playground-form"' not in page.content
        denied = reader.post(f"/agents/{agent.pk}/", {"form": "playground", "message": "hi"})
        assert denied.status_code == 403
    outsider = member(globex.tenant, "gina", "operator")
    gone = outsider.post(f"/agents/{agent.pk}/", {"form": "playground", "message": "hi"})
    assert gone.status_code == 404
    for bad in ("", "   ", "x" * 20_001):
        refused = operator.post(f"/agents/{agent.pk}/", {"form": "playground", "message": bad})
        assert refused.status_code == 422
        assert b'data-field-error="message"' in refused.content
    assert b'data-testid="playground-empty"' in operator.get(f"/agents/{agent.pk}/").content
    assert playground_runs(agent) == []


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_the_learning_loop_skips_playground_runs(acme: Persona, agent: Agent, owner: User_) -> None:
    tried = escalated_run(agent, message=ALWAYS_REVIEW, metadata=dict(playground.METADATA))
    customer = escalated_run(agent, message=ALWAYS_REVIEW)
    reviewer = hitl_services.Reviewer(
        actor=Actor("user", str(owner.user.pk)), user_id=owner.user.pk, role="owner"
    )
    for run in (tried, customer):
        with tenant_scope(acme.tenant.pk):
            orchestration.decide_review(
                reviewer=reviewer,
                request=review_of(run),
                decision="edit",
                response="A person from our team will call you today.",
            )
    assert not loop.learns_from(review_of(tried))
    assert loop.learns_from(review_of(customer))
    with tenant_scope(acme.tenant.pk):
        assert loop.learn_from_review(review_of(tried)) == "skipped"
        assert loop.learn_from_review(review_of(customer)) == "recorded"
        learnt = {str(p.source_run_id) for p in GoldenPath.objects.filter(agent=agent)}
    assert str(customer.pk) in learnt
    assert str(tried.pk) not in learnt


def test_playbooks_are_not_extracted_from_playground_runs(acme: Persona, agent: Agent) -> None:
    from tests.platform.learning.test_playbooks import ACTOR, ARTICLE, CATEGORY, _run, _settings

    with tenant_scope(acme.tenant.pk), _settings():
        tried = [_run(agent, sources=[ARTICLE]) for _ in range(5)]
        Run.objects.filter(pk__in=[r.pk for r in tried]).update(metadata=playground.METADATA)
        # Five operator tries are no evidence: nothing to extract from.
        assert playbooks.extract(agent, CATEGORY, actor=ACTOR).playbook is None
        for _ in range(5):
            _run(agent, sources=[ARTICLE])
        extracted = playbooks.extract(agent, CATEGORY, actor=ACTOR).playbook
    assert extracted is not None
    assert extracted.sample_count == 5  # the customers' five, not ten


@pytest.mark.django_db(transaction=True)
def test_playground_runs_are_no_customer_traffic_on_the_overview(
    celery_worker_app: object, acme: Persona, agent: Agent, operator: User_
) -> None:
    before = tenant_metrics(acme.tenant)
    operator.post(f"/agents/{agent.pk}/", {"form": "playground", "message": "Reset password?"})
    assert len(playground_runs(agent)) == 1
    after = tenant_metrics(acme.tenant)
    assert (after["runs_today"], after["runs_window"]) == (
        before["runs_today"],
        before["runs_window"],
    )
    acme.post(  # a customer's message through the API does count
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "customer", "message": "Reset password?"},
        headers={"Prefer": "wait=20"},
    )
    assert tenant_metrics(acme.tenant)["runs_today"] == before["runs_today"] + 1
