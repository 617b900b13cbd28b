"""`EMBEDDER=wordllama` (the `quality` extra): semantic vectors from the wheel's own weights,
zero-padded to the vector columns' width, through pgvector for knowledge and golden paths; a
paraphrase that shares no content word with the stored question is found, as the lexical
default cannot; the start-up check names a wrong value or the missing package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from agentflow import knowledge
from agentflow.checks import check_embedder
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.models import EMBEDDING_DIMENSIONS, KnowledgeChunk
from governance.audit import Actor
from learning import golden_paths
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona

pytest.importorskip("wordllama")

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")
QUESTION = "I lost my card"
PARAPHRASE = "my card is missing"  # no content word in common but "card"


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def use_embedder(settings: Any) -> Iterator[Any]:
    def use(spec: str) -> None:
        settings.AGENTFLOW = {**settings.AGENTFLOW, "EMBEDDER": spec}
        knowledge.get_embedder.cache_clear()

    yield use
    knowledge.get_embedder.cache_clear()


def test_vectors_are_padded_to_the_columns_and_normalised(use_embedder: Any) -> None:
    use_embedder("wordllama")
    embedder = knowledge.get_embedder()
    assert type(embedder).__name__ == "WordLlamaEmbedder"
    vector = knowledge.embed_query(QUESTION)
    assert vector.shape == (EMBEDDING_DIMENSIONS,)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    assert not vector[256:].any()  # the model's 256 dimensions, then zeros
    assert not knowledge.embed_query("").any()  # no tokens: the zero vector, not NaNs


def test_golden_paths_round_trip_through_pgvector(owner: Persona, use_embedder: Any) -> None:
    use_embedder("wordllama")
    agent = make_agent(owner)
    with tenant_scope(owner.tenant.pk):
        for question, answer in (
            (QUESTION, "[lost] Freeze the card in the app."),
            ("how do I top up my account", "[top up] Use a transfer."),
            ("what is the exchange rate", "[rate] See the rates page."),
        ):
            path = golden_paths.record_outcome(
                actor=ACTOR, agent=agent, question=question, answer=answer, source="edited", score=1
            )
            assert path is not None
        stored = golden_paths.GoldenPath.objects.get(question=QUESTION)
        assert np.allclose(np.asarray(stored.embedding), knowledge.embed_query(QUESTION), atol=1e-6)
        hits = golden_paths.search(query=PARAPHRASE, agent_id=agent.pk, limit=3)
    assert hits[0].golden_path.question == QUESTION
    semantic = hits[0].score
    offline = OfflineEmbedder(EMBEDDING_DIMENSIONS)
    lexical = float(offline.embed_one(QUESTION) @ offline.embed_one(PARAPHRASE))
    assert semantic > lexical + 0.2  # the point of the extra: paraphrases are close


def test_knowledge_is_embedded_and_searched_with_it(owner: Persona, use_embedder: Any) -> None:
    use_embedder("wordllama")
    agent = make_agent(owner)  # ingests the two articles through get_embedder()
    with tenant_scope(owner.tenant.pk):
        chunk = KnowledgeChunk.objects.filter(agent=agent, document__title="Refunds").get()
        expected = knowledge.get_embedder().embed_one(f"Refunds\n{chunk.text}")  # type: ignore[attr-defined]
        assert np.allclose(np.asarray(chunk.embedding), expected, atol=1e-6)
        hits = knowledge.search_chunks(
            agent.id, knowledge.embed_query("can I get my money back"), limit=1
        )
    assert hits[0].title == "Refunds"


def test_start_up_check_names_a_wrong_value_or_the_missing_package(
    settings: Any, use_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_embedder("wordllama")
    assert check_embedder() == []
    use_embedder("wordlama")  # a typo
    with pytest.raises(SystemCheckError, match="EMBEDDER = 'wordlama': expected"):
        call_command("check")
    use_embedder("wordllama:big")  # it takes no model name
    (error,) = check_embedder()
    assert "EMBEDDER = 'wordllama:big': expected" in error.msg
    # A platform installed without the extra: the check says what to install.
    real = knowledge.importlib.util.find_spec
    monkeypatch.setattr(
        knowledge.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "wordllama" else real(name, *args),
    )
    use_embedder("wordllama")
    (error,) = check_embedder()
    assert error.id == "agentflow.E001"
    assert "pip install 'agentflow[quality]'" in error.msg
