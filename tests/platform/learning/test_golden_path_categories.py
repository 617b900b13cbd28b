"""Golden paths are found within the message's intent (issue 21): a paraphrase of another
category's question no longer answers it, in the pgvector-backed store the platform uses."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agentflow.kernel.intents import OUT_OF_SCOPE
from agentflow.knowledge import embed_query
from agentflow.models import Agent
from governance.audit import Actor
from governance.models import AuditEvent
from learning import golden_paths
from learning.models import GoldenPath
from learning.stores import DjangoGoldenPathStore
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_persona
from tests.platform.api.conftest import agent as agent
from tests.platform.api.conftest import owner as owner

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = Actor.system("tests")
MESSAGE = "why was my card payment not delivered yet"
PATHS = (
    # Lexically closest to the message, but another category's question.
    ("why was I charged a fee for my card payment", "[fee]", "card_payment_fee"),
    ("when will the new card be delivered", "[arrival]", "card_arrival"),
    ("card questions in general", "[any]", ""),
)


def _record(agent: Agent) -> None:
    for question, answer, category in PATHS:
        _learn(agent, question, category, answer)


def _answers(agent: Agent, intent: str | None) -> list[str]:
    store = DjangoGoldenPathStore(agent.pk)
    with tenant_scope(agent.tenant_id):
        found = async_to_sync(store.search)(MESSAGE, embed_query(MESSAGE), limit=3, intent=intent)
    return [item.text for item in found]


def test_search_within_the_intent_skips_other_categories_paraphrases(
    owner: Persona, agent: Agent
) -> None:
    _record(agent)
    assert _answers(agent, None)[0] == "[fee]"  # the lexical winner, wrong category
    assert _answers(agent, "card_arrival") == ["[arrival]", "[any]"]
    assert _answers(agent, OUT_OF_SCOPE) == ["[any]"]


def test_search_within_the_intent_stays_in_the_tenant(owner: Persona, agent: Agent) -> None:
    _record(agent)
    other = make_persona("other-tenant")
    with tenant_scope(other.tenant.pk):
        foreign = DjangoGoldenPathStore(agent.pk)
        found = async_to_sync(foreign.search)(
            MESSAGE, embed_query(MESSAGE), limit=3, intent="card_arrival"
        )
    assert found == []


def test_a_runs_golden_path_search_is_one_statement(owner: Persona, agent: Agent) -> None:
    """The pipeline's search reads the question and answer with the ranking: loading the
    whole rows in a second statement (embedding and trace) was 40 % of its CPU (issue 15)."""
    _record(agent)
    store = DjangoGoldenPathStore(agent.pk)
    vector = embed_query(MESSAGE)
    with tenant_scope(agent.tenant_id):
        async_to_sync(store.search)(MESSAGE, vector, limit=3)  # counts the scope once
        with CaptureQueriesContext(connection) as queries:
            found = async_to_sync(store.search)(MESSAGE, vector, limit=3, intent="card_arrival")
    assert [(item.title, item.text) for item in found] == [
        ("when will the new card be delivered", "[arrival]"),
        ("card questions in general", "[any]"),
    ]
    assert all(0 < item.score <= 1 for item in found)
    assert len(queries.captured_queries) == 1


# --- the answer says what the question was about -------------------------------------------

REFUND = "[refund] Refunds reach your card within five days."


def _learn(agent: Agent, question: str, asked_as: str, answer: str = REFUND) -> GoldenPath:
    with tenant_scope(agent.tenant_id):
        path = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=question,
            answer=answer,
            source="edited",
            score=1.0,
            category=asked_as,
        )
    assert path is not None
    return path


def _categories(agent: Agent) -> dict[str, str]:
    with tenant_scope(agent.tenant_id):
        return dict(GoldenPath.objects.filter(agent=agent).values_list("question", "category"))


def test_a_misclassified_question_joins_the_category_its_answer_belongs_to(
    owner: Persona, agent: Agent
) -> None:
    _learn(agent, "where is my refund", "refund_not_showing")
    _learn(agent, "refund still missing", "refund_not_showing")
    # The classifier put this one elsewhere; the person answered it as a refund.
    path = _learn(agent, "money back not arrived on my card", "card_arrival")
    assert path.category == "refund_not_showing"
    assert path.trace_summary["asked_as"] == "card_arrival"
    with tenant_scope(agent.tenant_id):
        question = "my money back has not arrived"
        vector = embed_query(question)
        store = DjangoGoldenPathStore(agent.pk)
        arrival = async_to_sync(store.search)(question, vector, limit=3, intent="card_arrival")
        refund = async_to_sync(store.search)(question, vector, limit=3, intent="refund_not_showing")
    assert arrival == []  # a card-arrival message is not answered with a refund answer
    assert refund[0].id == str(path.pk)


def test_minority_rows_move_to_the_majority_audited_and_ties_stay(
    owner: Persona, agent: Agent
) -> None:
    first = _learn(agent, "refund not there", "card_arrival")  # misclassified, first of all
    tied = _learn(agent, "where is my refund", "refund_not_showing")
    assert (first.category, tied.category) == ("card_arrival", "refund_not_showing")  # 1 to 1
    _learn(agent, "refund still missing", "refund_not_showing")  # 2 to 1: the majority
    assert set(_categories(agent).values()) == {"refund_not_showing"}
    with tenant_scope(agent.tenant_id):
        (event,) = AuditEvent.objects.filter(action="learning.golden_path.recategorised")
    assert event.target_id == str(first.pk)
    assert event.changes == {"category": {"from": "card_arrival", "to": "refund_not_showing"}}
    # Another answer, and uncategorised rows, take no part.
    _learn(agent, "how do I top up", "top_up", answer="[top up] Use a bank transfer.")
    _learn(agent, "refunds in general", "")
    categories = _categories(agent)
    assert categories["how do I top up"] == "top_up"
    assert categories["refunds in general"] == ""
