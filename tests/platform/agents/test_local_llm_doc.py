"""docs/local-llm.md, executed: its `make run` settings and its agent file against a local
OpenAI-compatible server (the test server in place of Ollama), through the API and a real
Celery worker, up to an answer from the model with knowledge embedded by the same server."""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow import knowledge
from agentflow.cli import main
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.models import EMBEDDING_DIMENSIONS
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    RecordedRequest,
    ScriptedResponse,
    chat_completion,
)
from tests.platform.api.conftest import Persona, make_persona

pytestmark = pytest.mark.django_db(transaction=True)
DOC = Path(__file__).resolve().parents[3] / "docs" / "local-llm.md"
OLLAMA = "http://127.0.0.1:11434/v1"
ANSWER = "Open Settings, then Security, and click Reset password."


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def _make_run_environment() -> dict[str, str]:
    """The variables the page's `... make run` command sets."""
    (command,) = [block for block in _blocks("bash") if "make run" in block]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[-2:] == ["make", "run"]
    return dict(word.split("=", 1) for word in words[:-2])


def _meaningful_embeddings(body: Any) -> dict[str, Any]:
    """Vectors that carry meaning (the offline embedder's n-grams) as an embedding model's
    would, so the question finds the article; the wire format is the OpenAI API's."""
    texts = list(body["input"])
    rows = OfflineEmbedder(EMBEDDING_DIMENSIONS).embed_array(texts).tolist()
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
    return {"object": "list", "model": body["model"], "data": data, "usage": usage}


def _model(request: RecordedRequest) -> ScriptedResponse:
    """A model that classifies (the intent classifier asks for JSON) and answers."""
    if request.path.endswith("/embeddings"):
        return ScriptedResponse(body=_meaningful_embeddings)
    model = request.body["model"]
    if "response_format" in request.body:
        intent = json.dumps({"intent": "ACCOUNT_ACCESS", "confidence": 0.92})
        return chat_completion(intent, model=model)
    return chat_completion(ANSWER, model=model)


@pytest.fixture
def local_server(settings: Any) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(default=_model) as server:
        environment = {
            name: value.replace(OLLAMA, server.base_url)
            for name, value in _make_run_environment().items()
        }
        assert set(environment) == {
            "LLM_ALLOWED_BASE_URLS",
            "EMBEDDER",
            "EMBEDDER_BASE_URL",
            "LLM_MODEL_PRICES",
        }
        # The same names in settings.AGENTFLOW, as the settings module reads them.
        settings.AGENTFLOW = {
            **settings.AGENTFLOW,
            **environment,
            "LLM_ALLOWED_BASE_URLS": environment["LLM_ALLOWED_BASE_URLS"].split(","),
            "LLM_MODEL_PRICES": json.loads(environment["LLM_MODEL_PRICES"]),
        }
        knowledge.get_embedder.cache_clear()
        yield server
    knowledge.get_embedder.cache_clear()


def test_the_page_takes_an_agent_to_an_answer_from_the_local_model(
    local_server: FakeOpenAIServer, celery_worker_app: object
) -> None:
    owner: Persona = make_persona("Acme", tier="professional")
    (agent_file,) = [block for block in _blocks("json") if '"blueprint"' in block]
    body = json.loads(agent_file.replace(OLLAMA, local_server.base_url))

    created = owner.post("/api/v1/agents", body)
    assert created.status_code == 201, created.json()
    agent_id = created.json()["id"]
    (commands,) = [block for block in _blocks("bash") if "/knowledge" in block]
    article = json.loads(re.search(r"-d '(\{\"title\".*?\})'", commands).group(1))  # type: ignore[union-attr]
    assert owner.post(f"/api/v1/agents/{agent_id}/knowledge", article).status_code == 201
    question = json.loads(re.search(r"-d '(\{\"user_id\".*?\})'", commands).group(1))  # type: ignore[union-attr]

    response = owner.post(
        f"/api/v1/agents/{agent_id}/runs", question, headers={"Prefer": "wait=30"}
    )

    assert response.status_code == 201, response.json()
    result = response.json()["result"]
    assert response.json()["status"] == "completed"
    assert result["content"] == ANSWER
    assert [source["title"] for source in result["sources"]] == ["Passwords"]
    assert (result["metadata"]["provider"], result["metadata"]["model"]) == ("openai", "llama3.2")
    assert result["metadata"]["intent_method"] == "llm"
    # The page's "prices" at 0: the tokens are counted, the run costs nothing (section 5).
    assert response.json()["tokens"] > 0
    assert Decimal(response.json()["cost_usd"]) == 0
    assert result["metadata"]["preflight"]["max_usd"] == 0
    paths = [request.path for request in local_server.requests]
    assert "/v1/embeddings" in paths  # the article, then the question
    assert "/v1/chat/completions" in paths
    embedded = [r for r in local_server.requests if r.path == "/v1/embeddings"]
    assert {r.body["model"] for r in embedded} == {"all-minilm"}


def test_the_pages_llm_block_in_an_init_file_validates(
    local_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """`agentflow init support_agent -o agent.yaml`, the page's `llm` block put in, and
    `agentflow validate agent.yaml` under the page's allowlist."""
    path = tmp_path / "agent.yaml"
    assert main(["init", "support_agent", "-o", str(path)], stdout=io.StringIO()) == 0
    (agent_file,) = [block for block in _blocks("json") if '"blueprint"' in block]
    llm = json.loads(agent_file.replace(OLLAMA, local_server.base_url))["config"]["llm"]
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["config"]["llm"] = llm
    path.write_text(yaml.safe_dump(document), encoding="utf-8")

    out = io.StringIO()
    assert main(["validate", str(path)], stdout=out) == 0, out.getvalue()

    document["config"]["llm"]["providers"][0]["base_url"] = "http://10.0.0.9:11434/v1"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    out = io.StringIO()
    assert main(["validate", str(path)], stdout=out) == 2
    assert "config.llm.providers[0].base_url: not an allowed LLM endpoint" in out.getvalue()
