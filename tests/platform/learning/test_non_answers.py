"""The learning loop never learns a non-answer (issue 13, item 9).

A golden path is answered verbatim, at high confidence, with no review: learnt from "a
person will follow up", it promises every similar question a person nobody sends.
``record_outcome`` (every golden path goes through it) refuses such texts, whoever asks:
a HITL decision, feedback, a retried task.
"""

from __future__ import annotations

import pytest

from agentflow.kernel.config import DEFAULT_TEMPLATE_ANSWER
from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER
from agentflow.kernel.pipeline import DEFAULT_ESCALATION_MESSAGE
from agentflow.models import Agent, Run
from governance.audit import Actor
from governance.models import AuditEvent
from hitl.models import ReviewSettings
from learning import golden_paths
from learning.models import GoldenPath, GoldenPathSource
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.learning.test_feedback_and_search import CONFIDENT, FEEDBACK, _run

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = Actor.system("tests")
QUESTION = "the export button does nothing"
AGENT_MESSAGE = "Hold on: a specialist from our team is looking at it."
HANDOFF = "We're on it: our team will get back to you about {reason}."


@pytest.mark.parametrize(
    "answer",
    [
        DONT_KNOW_ANSWER,
        DONT_KNOW_ANSWER.upper().replace(".", "!"),  # case and punctuation do not hide it
        DEFAULT_ESCALATION_MESSAGE,
        DEFAULT_TEMPLATE_ANSWER,
        AGENT_MESSAGE,  # this agent's own escalation message
        "We're on it: our team will get back to you about the export.",  # tenant's hand-off
        "Sorry about that! Someone from our support team will get back to you soon.",
        "  \n\t",
    ],
    ids=[
        "dont-know",
        "dont-know-shouted",
        "escalation-message",
        "template-answer",
        "agent-escalation-message",
        "tenant-hand-off",
        "worded-hand-off",
        "blank",
    ],
)
def test_record_outcome_refuses_a_non_answer(owner: Persona, agent: Agent, answer: str) -> None:
    Agent.unscoped.filter(pk=agent.pk).update(
        config={**agent.config, "escalation_message": AGENT_MESSAGE}
    )
    agent.refresh_from_db()
    ReviewSettings.unscoped.create(tenant=owner.tenant, handoff_message=HANDOFF)
    with tenant_scope(owner.tenant.pk):
        before = AuditEvent.unscoped.count()
        for source in (GoldenPathSource.APPROVED, GoldenPathSource.EDITED):
            path = golden_paths.record_outcome(
                actor=ACTOR, agent=agent, question=QUESTION, answer=answer, source=source, score=1
            )
            assert path is None
        assert not GoldenPath.objects.exists()
        assert AuditEvent.unscoped.count() == before


def test_record_outcome_still_learns_an_answer_that_mentions_the_team(
    owner: Persona, agent: Agent
) -> None:
    answer = "Open Settings > Export; our team emails you the file within 5 minutes."
    with tenant_scope(owner.tenant.pk):
        path = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=QUESTION,
            answer=answer,
            source=GoldenPathSource.EDITED,
            score=1,
        )
        assert path is not None
        assert path.answer == answer


def test_a_thumbs_up_for_a_hand_off_teaches_nothing(owner: Persona, agent: Agent) -> None:
    """A model that worded its own hand-off and delivered it: the customer liked being
    promised a person; the next customer must not be promised one by a golden path."""
    run = _run(agent, CONFIDENT)
    assert run.status == "completed"
    handed_off = "Good question! I've passed your question to our team; they will reply soon."
    Run.unscoped.filter(pk=run.pk).update(result={**(run.result or {}), "content": handed_off})
    liked = owner.post(FEEDBACK, {"run_id": str(run.pk), "thumbs": "up"})
    assert liked.status_code == 201, liked.json()
    assert liked.json()["golden_path_id"] is None
    assert not GoldenPath.unscoped.filter(agent=agent).exists()


@pytest.mark.parametrize(
    ("question", "category"), [("thanks so much!", "BILLING"), ("where is it", "SMALL_TALK")]
)
def test_record_outcome_never_learns_small_talk(
    owner: Persona, agent: Agent, question: str, category: str
) -> None:
    """A reviewer who edits the reply to "thanks!" teaches nothing: every agent answers it."""
    with tenant_scope(owner.tenant.pk):
        path = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=question,
            answer="You're welcome, glad we could help with your invoice.",
            source=GoldenPathSource.EDITED,
            score=1,
            category=category,
        )
        assert path is None
        assert not GoldenPath.objects.exists()
