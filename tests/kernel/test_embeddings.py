"""The offline embedder: deterministic, normalised, and semantically useful enough."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.kernel.llm.base import EmbeddingResponse
from agentflow.kernel.llm.embeddings import (
    OfflineEmbedder,
    SentenceTransformerEmbedder,
    cosine,
    tokenize,
)

RESET = "How do I reset my password?"
PARAPHRASE = "I forgot my password, how can I reset it"
UNRELATED = "What are your opening hours"


@pytest.fixture(scope="module")
def embedder() -> OfflineEmbedder:
    return OfflineEmbedder()


def test_vectors_have_384_unit_norm_float_dimensions(embedder: OfflineEmbedder) -> None:
    [vector] = embedder.embed_sync([RESET])
    assert embedder.dimensions == 384
    assert len(vector) == 384
    assert all(isinstance(x, float) for x in vector)
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)


def test_paraphrases_are_closer_than_unrelated_questions(embedder: OfflineEmbedder) -> None:
    reset, paraphrase, unrelated = embedder.embed_sync([RESET, PARAPHRASE, UNRELATED])
    assert cosine(reset, paraphrase) > cosine(reset, unrelated) + 0.3


def test_character_ngrams_tolerate_typos_and_inflections(embedder: OfflineEmbedder) -> None:
    typo, inflected, right, other = embedder.embed_sync(
        ["pasword resett", "resetting passwords", "password reset", "delivery tracking number"]
    )
    assert cosine(typo, right) > cosine(typo, other) + 0.2
    assert cosine(inflected, right) > cosine(inflected, other) + 0.2


def test_identical_texts_embed_identically_and_case_does_not_matter(
    embedder: OfflineEmbedder,
) -> None:
    a, b = embedder.embed_sync([RESET, RESET.upper()])
    assert a == b


def test_vectors_are_the_same_in_another_process_with_another_hash_seed(
    embedder: OfflineEmbedder,
) -> None:
    # Python's str hash is salted per process; the embedder must not depend on it.
    code = (
        "import json; from agentflow.kernel.llm.embeddings import OfflineEmbedder; "
        f"print(json.dumps(OfflineEmbedder().embed_sync([{RESET!r}])[0]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == embedder.embed_sync([RESET])[0]


def test_empty_text_is_the_zero_vector_with_zero_similarity(embedder: OfflineEmbedder) -> None:
    empty, text = embedder.embed_sync(["  ?! ", RESET])
    assert not any(empty)
    assert cosine(empty, text) == 0.0


def test_embed_array_is_a_matrix_and_handles_no_texts(embedder: OfflineEmbedder) -> None:
    assert embedder.embed_array([RESET, UNRELATED]).shape == (2, 384)
    assert embedder.embed_array([]).shape == (0, 384)


def test_cached_vectors_cannot_be_mutated_by_callers(embedder: OfflineEmbedder) -> None:
    vector = embedder.embed_one(RESET)
    with pytest.raises(ValueError, match="read-only"):
        vector[0] = 42.0


def test_long_texts_embed_too(embedder: OfflineEmbedder) -> None:
    article = " ".join([PARAPHRASE] * 200)
    assert cosine(embedder.embed_one(article), embedder.embed_one(PARAPHRASE)) > 0.9


async def test_async_embed_returns_an_offline_embedding_response(
    embedder: OfflineEmbedder,
) -> None:
    response = await embedder.embed([RESET, UNRELATED])
    assert isinstance(response, EmbeddingResponse)
    assert response.provider == "offline"
    assert response.model == "offline-hash-384"
    assert response.cost_usd == 0.0
    assert response.usage.prompt_tokens > 0
    assert response.vectors == embedder.embed_sync([RESET, UNRELATED])


def test_other_dimensions_are_supported_and_tiny_ones_refused() -> None:
    assert len(OfflineEmbedder(dimensions=64).embed_sync([RESET])[0]) == 64
    with pytest.raises(ValueError, match="dimensions"):
        OfflineEmbedder(dimensions=4)


def test_cosine_checks_shapes_and_is_bounded() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shapes"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_tokenize_lowercases_and_keeps_contractions_whole() -> None:
    assert tokenize("Don't PANIC, it's fine_ok") == ["dont", "panic", "its", "fine", "ok"]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_any_text_embeds_to_a_finite_unit_or_zero_vector(text: str) -> None:
    vector = OfflineEmbedder().embed_one(text)
    assert np.isfinite(vector).all()
    norm = float(np.linalg.norm(vector))
    assert norm == 0.0 or math.isclose(norm, 1.0, rel_tol=1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed",
)
def test_sentence_transformer_embedder_explains_the_missing_extra() -> None:
    with pytest.raises(ImportError, match=r"agentflow\[local-embeddings\]"):
        SentenceTransformerEmbedder()


async def test_sentence_transformer_embedder_embeds_when_installed() -> None:
    pytest.importorskip("sentence_transformers")
    try:
        embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    except OSError as exc:  # installed, but no local copy of the model
        pytest.skip(f"model not available offline: {exc}")
    response = await embedder.embed([RESET, PARAPHRASE, UNRELATED])
    reset, paraphrase, unrelated = response.vectors
    assert len(reset) == embedder.dimensions
    assert cosine(reset, paraphrase) > cosine(reset, unrelated)
