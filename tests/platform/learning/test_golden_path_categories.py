"""Golden paths are found within the message's intent (issue 21): a paraphrase of another
category's question no longer answers it, in the pgvector-backed store the platform uses."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from agentflow.kernel.intents import OUT_OF_SCOPE
from agentflow.knowledge import embed_query
from agentflow.models import Agent
from governance.audit import Actor
from learning import golden_paths
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
    with tenant_scope(agent.tenant_id):
        for question, answer, category in PATHS:
            golden_paths.record_outcome(
                actor=ACTOR,
                agent=agent,
                question=question,
                answer=answer,
                source="edited",
                score=1.0,
                category=category,
            )


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
