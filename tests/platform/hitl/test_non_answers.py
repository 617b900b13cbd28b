"""A draft that is no answer is never approved (issue 13, item 9).

The agent's "I'm not sure... a person will follow up" draft, its escalation message, the
template answer, the tenant's hand-off message: approving any of them promised the
customer a person while closing the review, and taught the agent to say it to every
paraphrase, at high confidence and unreviewed. Approve answers ``422 nothing_to_approve``
naming why and changes nothing; edit and reject still work.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER
from agentflow.models import Agent, Run
from hitl.models import HITLRequest, ReviewSettings
from learning.models import GoldenPath
from learning.tasks import record_review_outcome_task
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, nothing_written
from tests.platform.hitl.conftest import QUEUE, Member, escalated_run, review_of

pytestmark = pytest.mark.django_db(transaction=True)

# What the customer wrote in the attack: nothing in the knowledge base is about it.
UNKNOWN = "the export button does nothing"
PARAPHRASE = "nothing happens when I press the export button"


def _dont_know_request(agent: Agent) -> HITLRequest:
    request = review_of(escalated_run(agent, UNKNOWN))
    assert request.proposed_answer == DONT_KNOW_ANSWER, request.proposed_answer
    return request


def _golden_paths(agent: Agent) -> int:
    return GoldenPath.unscoped.filter(agent=agent).count()


def _learn(*requests: HITLRequest) -> None:
    """What the worker does after a decision commits (no worker runs in these tests)."""
    for request in requests:
        record_review_outcome_task(request.tenant_id, str(request.pk))


def test_approving_the_hand_off_draft_is_422_and_changes_nothing(
    owner: Persona, agent: Agent, reviewer: Member
) -> None:
    request = _dont_know_request(agent)
    item = owner.get(f"{QUEUE}/{request.pk}").json()
    assert item["approvable"] is False
    assert item["non_answer"]["kind"] == "dont_know"

    with nothing_written(owner.tenant):
        for who in (reviewer, owner):  # a member and a write key alike
            body = assert_error(
                who.post(f"{QUEUE}/{request.pk}/respond", {"decision": "approve"}),
                422,
                "nothing_to_approve",
            )
            assert body["reason"] == "dont_know"
            assert "person will follow up" in body["detail"]
            assert body["errors"]["decision"]
    request.refresh_from_db()
    assert (request.status, request.decision) == ("pending", "")
    assert _golden_paths(agent) == 0

    # The paraphrase is not answered from a golden path: it still reaches a person.
    again = escalated_run(agent, PARAPHRASE)
    assert again.status == "awaiting_review"
    assert not [s for s in (again.result or {}).get("sources", []) if s["kind"] == "golden_path"]


def test_edit_and_reject_still_decide_it(owner: Persona, agent: Agent, reviewer: Member) -> None:
    edited, rejected = _dont_know_request(agent), _dont_know_request(agent)
    answer = "Exports run in the background: you get an email with the file within 5 minutes."
    assert reviewer.respond(edited.pk, decision="edit", response=answer).status_code == 200
    assert reviewer.respond(rejected.pk, decision="reject", reason="unknown").status_code == 200
    _learn(edited, rejected)
    paths = list(GoldenPath.unscoped.filter(agent=agent).values_list("answer", flat=True))
    assert paths == [answer]  # the reviewer's answer is learnt; nothing else


def test_sending_the_hand_off_text_back_as_an_edit_is_422(
    owner: Persona, agent: Agent, reviewer: Member
) -> None:
    request = _dont_know_request(agent)
    with nothing_written(owner.tenant):
        body = assert_error(
            reviewer.respond(request.pk, decision="edit", response=f"  {DONT_KNOW_ANSWER}\n"),
            422,
            "not_an_answer",
        )
        assert body["errors"]["response"]
    assert _golden_paths(agent) == 0


@pytest.mark.parametrize(
    ("draft", "kind"),
    [
        ("Hold on: a specialist from our team is looking at it.", "escalation_message"),
        ("Sorry! We're on it: our team will get back to you about 'export'.", "handoff_message"),
        ("Thanks! I've forwarded your message to a colleague.", "hand_off"),
        ("   \n", "empty"),
    ],
    ids=["agent-escalation-message", "tenant-hand-off-template", "worded-hand-off", "blank"],
)
def test_configured_and_worded_hand_offs_are_not_approvable(
    owner: Persona, agent: Agent, reviewer: Member, draft: str, kind: str
) -> None:
    """The agent's own escalation message and the tenant's hand-off template count, not only
    the defaults; so does a model's own wording of "someone will get back to you"."""
    agent.config = {
        **agent.config,
        "escalation_message": "Hold on: a specialist from our team is looking at it.",
    }
    Agent.unscoped.filter(pk=agent.pk).update(config=agent.config)
    ReviewSettings.unscoped.create(
        tenant=owner.tenant,
        handoff_message="We're on it: our team will get back to you about {reason}.",
    )
    request = review_of(escalated_run(agent))  # a real draft (the reset article) ...
    HITLRequest.unscoped.filter(pk=request.pk).update(proposed_answer=draft)  # ... replaced
    with nothing_written(owner.tenant):
        body = assert_error(reviewer.respond(request.pk, decision="approve"), 422)
        assert (body["error_type"], body["reason"]) == ("nothing_to_approve", kind)
    assert _golden_paths(agent) == 0


def test_a_real_draft_stays_approvable(owner: Persona, agent: Agent, reviewer: Member) -> None:
    run = escalated_run(agent)
    request = review_of(run)
    listed: list[dict[str, Any]] = owner.get(QUEUE).json()["results"]
    assert [(i["id"], i["approvable"], i["non_answer"]) for i in listed] == [
        (str(request.pk), True, None)
    ]
    assert reviewer.respond(request.pk, decision="approve").status_code == 200
    _learn(request)
    run.refresh_from_db()
    assert Run.unscoped.get(pk=run.pk).status == "completed"
    assert _golden_paths(agent) == 1
