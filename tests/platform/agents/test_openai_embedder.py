"""`EMBEDDER=openai:MODEL`: knowledge embedded by an OpenAI-compatible `/v1/embeddings`
(a real local HTTP server), held to the LLM allowlists, its width checked against the
vector columns, and a clear 503 when the server is down."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from agentflow import knowledge
from agentflow.checks import check_embedder
from agentflow.kernel.vectors import as_matrix
from agentflow.models import EMBEDDING_DIMENSIONS, KnowledgeChunk, KnowledgeDocument
from tenants.context import tenant_scope
from tests.kernel.fake_openai_server import FakeOpenAIServer, embeddings
from tests.platform.api.conftest import Persona, make_agent, make_persona

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=embeddings(dimensions=EMBEDDING_DIMENSIONS)) as srv:
        yield srv


@pytest.fixture
def use_embedder(settings: Any) -> Iterator[Any]:
    """Point the platform's embedder somewhere (the cached one is rebuilt each time)."""

    def use(base_url: str | None, model: str = "all-minilm", **more: Any) -> None:
        settings.AGENTFLOW = {
            **settings.AGENTFLOW,
            "EMBEDDER": f"openai:{model}",
            "EMBEDDER_BASE_URL": base_url or "",
            "LLM_ALLOWED_BASE_URLS": [base_url] if base_url else [],
            **more,
        }
        knowledge.get_embedder.cache_clear()

    yield use
    knowledge.get_embedder.cache_clear()


def test_knowledge_is_embedded_by_the_server(
    owner: Persona, server: FakeOpenAIServer, use_embedder: Any
) -> None:
    use_embedder(server.base_url)
    agent = make_agent(owner)  # ingests two articles through get_embedder()

    posts = [r for r in server.requests if r.path == "/v1/embeddings"]
    assert posts, "nothing reached the embeddings server"
    assert {r.body["model"] for r in posts} == {"all-minilm"}
    with tenant_scope(owner.tenant.pk):
        chunk = (
            KnowledgeChunk.objects.filter(agent=agent).order_by("document__title", "index").first()
        )
        assert chunk is not None
        sent = [text for r in posts for text in r.body["input"]]
        assert any(chunk.text in text for text in sent)
        # What is stored is the server's vector (normalised), not the offline embedder's.
        fake = embeddings(dimensions=EMBEDDING_DIMENSIONS).body
        assert callable(fake)
        expected = as_matrix(
            fake({"input": [f"{chunk.document.title}\n{chunk.text}"]})["data"][0]["embedding"]
        )[0]
        assert np.allclose(np.asarray(chunk.embedding), expected, atol=1e-6)
        # Searching embeds the message through the same server.
        hits = knowledge.search_chunks(agent.id, knowledge.embed_query(chunk.text), limit=1)
    assert hits[0].text == chunk.text


def test_the_key_is_a_reference_the_operator_allows(
    server: FakeOpenAIServer, use_embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-local")
    use_embedder(
        server.base_url,
        EMBEDDER_API_KEY="${LOCAL_LLM_KEY}",
        LLM_API_KEY_ENV_VARS=["OPENAI_API_KEY", "LOCAL_LLM_KEY"],
    )
    assert knowledge.embed_query("hello").shape == (EMBEDDING_DIMENSIONS,)
    assert server.requests[-1].headers["authorization"] == "Bearer sk-local"

    use_embedder(server.base_url, EMBEDDER_API_KEY="sk-literal-key")
    with pytest.raises(ValueError, match=r"EMBEDDER_API_KEY must name one of LLM_API_KEY_ENV"):
        knowledge.get_embedder()
    use_embedder(server.base_url, EMBEDDER_API_KEY="${SECRET_KEY}")
    with pytest.raises(ValueError, match="EMBEDDER_API_KEY"):
        knowledge.get_embedder()


def test_an_endpoint_outside_the_allowlist_is_refused(
    server: FakeOpenAIServer, use_embedder: Any
) -> None:
    use_embedder(server.base_url, LLM_ALLOWED_BASE_URLS=["http://127.0.0.1:11434/v1"])
    with pytest.raises(ValueError, match="is not in LLM_ALLOWED_BASE_URLS"):
        knowledge.get_embedder()
    assert server.requests == []


def test_a_model_of_another_width_is_named_and_nothing_is_stored(
    owner: Persona, use_embedder: Any
) -> None:
    agent = make_agent(owner)
    with FakeOpenAIServer(default=embeddings(dimensions=768)) as wide:
        use_embedder(wide.base_url, model="nomic-embed-text")
        response = owner.post(
            f"/api/v1/agents/{agent.pk}/knowledge",
            {"title": "Shipping", "content": "Parcels ship within two days."},
        )
    assert response.status_code == 503, response.json()
    body = response.json()
    assert body["error_type"] == "embedder_unavailable"
    assert "gives 768 dimensions; the vector columns hold 384" in body["detail"]
    with tenant_scope(owner.tenant.pk):
        assert not KnowledgeDocument.objects.filter(title="Shipping").exists()


def test_a_server_that_is_down_is_a_503_naming_it(owner: Persona, use_embedder: Any) -> None:
    agent = make_agent(owner)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    use_embedder(url)

    response = owner.post(
        f"/api/v1/agents/{agent.pk}/knowledge",
        {"title": "Shipping", "content": "Parcels ship within two days."},
    )

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["detail"].startswith(f"embeddings server {url} (all-minilm): ")
    with pytest.raises(knowledge.EmbedderUnavailable, match="embeddings server"):
        knowledge.embed_query("hello")


def test_a_bad_embedder_setting_fails_the_start_up_check(
    settings: Any, use_embedder: Any, server: FakeOpenAIServer
) -> None:
    use_embedder(server.base_url)
    assert check_embedder() == []

    use_embedder(server.base_url, EMBEDDER_API_KEY="sk-literal-key")
    (error,) = check_embedder()
    assert error.id == "agentflow.E001"
    assert "EMBEDDER_API_KEY must name one of LLM_API_KEY_ENV_VARS" in error.msg
    settings.AGENTFLOW = {**settings.AGENTFLOW, "EMBEDDER": "openai"}  # no model
    with pytest.raises(SystemCheckError, match="EMBEDDER = 'openai': expected"):
        call_command("check")
    assert server.requests == []  # checked without asking the server
