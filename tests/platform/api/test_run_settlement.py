"""What one run's execution writes, and that the fewer statements keep its guarantees
(issue 15): the steps and messages ride on the settling compare-and-set, so a delivery
that loses it writes none; a thread or session the database refuses is never answered
as if it were kept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from agentflow import services
from agentflow.kernel.results import AgentReply
from agentflow.models import Message, Run, RunStatus, RunTransition, Step, Thread
from governance.audit import Actor
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.db_roles import owner_connection
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def _accepted(owner: Persona, agent: Any, user_id: str, message: str) -> str:
    response = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": user_id, "message": message},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def _reply(run: Run) -> AgentReply:
    return AgentReply(
        content="Use the reset link.",
        user_id=run.user_id,
        session_id=str(run.session_id),
        intent="PASSWORD_RESET",
        intent_confidence=0.9,
        confidence=0.9,
        thread_id="",
        transition="new_topic",
        timings_ms={"session": 0.5, "classify": 1.25, "generate": 3.0},
        cost_usd=0.0015,
    )


def test_a_settled_run_has_its_steps_in_order_with_the_llm_stage_priced(
    owner: Persona, agent: Any
) -> None:
    run_id = _accepted(owner, agent, "steps-user", "How do I reset my password?")
    with tenant_scope(owner.tenant.pk):
        assert services.execute_run(run_id) == RunStatus.COMPLETED
        steps = list(Step.objects.filter(run_id=run_id).order_by("index"))
        run = Run.objects.get(pk=run_id)
    assert [step.index for step in steps] == list(range(len(steps)))
    assert {step.tenant_id for step in steps} == {owner.tenant.pk}
    generate = next(step for step in steps if step.name == "generate")
    assert generate.tokens == run.tokens > 0
    assert generate.detail["provider"] == "offline"
    assert sum(step.tokens for step in steps) == run.tokens


def test_a_delivery_that_loses_the_settling_compare_and_set_writes_no_steps(
    owner: Persona, agent: Any
) -> None:
    """Cancelled while its reply was being made: the late reply records nothing."""
    run_id = _accepted(owner, agent, "late-user", "How do I reset my password?")
    with tenant_scope(owner.tenant.pk):
        run = Run.objects.select_related("agent").get(pk=run_id)
        assert services.transition(
            run_id, (RunStatus.PENDING,), RunStatus.PROCESSING, reason="picked up", row=run
        )
        services.cancel_run(actor=Actor.system("test"), run=Run.objects.get(pk=run_id))
        run.status = RunStatus.PROCESSING  # the worker's copy, from before the cancel

        assert services.complete_run(run, _reply(run)) == RunStatus.CANCELLED
        assert not Step.objects.filter(run_id=run_id).exists()
        assert not Message.objects.filter(run_id=run_id).exists()
        moves = RunTransition.objects.filter(run_id=run_id).values_list("to_status", flat=True)
        assert sorted(moves) == [RunStatus.CANCELLED, RunStatus.PROCESSING]
        assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED

        # The winning delivery's steps are written once, with the transition.
        other_id = _accepted(owner, agent, "late-user-2", "How do I reset my password?")
        other = Run.objects.select_related("agent").get(pk=other_id)
        services.transition(
            other_id, (RunStatus.PENDING,), RunStatus.PROCESSING, reason="picked up", row=other
        )
        assert services.complete_run(other, _reply(other)) == RunStatus.COMPLETED
        assert services.complete_run(other, _reply(other)) == RunStatus.COMPLETED  # again
        names = list(Step.objects.filter(run_id=other_id).values_list("name", "duration_ms"))
        assert names == [("session", 0.5), ("classify", 1.25), ("generate", 3.0)]
        said = Message.objects.filter(run_id=other_id).order_by("created_at")
        assert [(m.role, m.content) for m in said] == [
            ("user", "How do I reset my password?"),
            ("assistant", "Use the reset link."),
        ]
        assert {m.session_id for m in said} == {other.session_id}
        assert {m.tenant_id for m in said} == {owner.tenant.pk}


@contextmanager
def refused(table: str, writes: str) -> Iterator[None]:
    """PostgreSQL refuses these writes to ``table`` (as a full disk or a lost table would)."""
    with owner_connection(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'writes refused'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse_write BEFORE {writes} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_write()"
        )
    try:
        yield
    finally:
        with owner_connection(), connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER refuse_write ON {table}")
            cursor.execute("DROP FUNCTION refuse_write()")


def test_a_thread_the_database_refuses_fails_the_run_loudly(owner: Persona, agent: Any) -> None:
    """The thread stage runs inside the plan, yet no plan branch absorbs its PersistenceError
    (it used to become the plan's error, and a person was asked to answer a conversation
    that was not kept): the run fails, naming the stage, and nothing pretends."""
    run_id = _accepted(owner, agent, "refused-user", "How do I reset my password?")
    with tenant_scope(owner.tenant.pk), refused("agentflow_thread", "INSERT OR UPDATE"):
        assert services.execute_run(run_id) == RunStatus.FAILED
        run = Run.objects.get(pk=run_id)
        assert run.error.startswith("PersistenceError: thread stage could not persist")
        assert "writes refused" in run.error
        assert not Thread.objects.exists()
        assert not Message.objects.filter(run_id=run_id).exists()
        assert not HITLRequest.objects.filter(run_id=run_id).exists()


def test_a_session_the_database_refuses_fails_the_run_loudly(owner: Persona, agent: Any) -> None:
    run_id = _accepted(owner, agent, "refused-user", "How do I reset my password?")
    with tenant_scope(owner.tenant.pk), refused("agentflow_agentsession", "UPDATE"):
        assert services.execute_run(run_id) == RunStatus.FAILED
        run = Run.objects.get(pk=run_id)
        assert run.error.startswith("PersistenceError: update stage could not persist")
        assert "writes refused" in run.error
        assert not Message.objects.filter(run_id=run_id).exists()
        assert not Step.objects.filter(run_id=run_id).exists()
