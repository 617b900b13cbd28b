"""WordLlama embeddings: a semantic embedder with no torch and no network (the `quality` extra).

`wordllama <https://github.com/dleemiller/WordLlama>`_ pools token embeddings taken from a large
language model's embedding layer and trained for sentence similarity; its wheel (about 19 MB)
ships the 256-dimension ``l2_supercat`` weights and their tokenizer, so loading needs neither
a download nor a GPU, and embedding a message takes well under a millisecond. It places
paraphrases that share no words together ("my card is missing" / "I lost my card"), which
the lexical `OfflineEmbedder` cannot: BANKING77 nearest-neighbour accuracy 0.88 against 0.84.

The vectors are zero-padded to the width of the platform's vector columns (384): padding
changes no cosine similarity, so the columns, indexes and stores stay as they are. Vectors
of different embedders are not comparable, though: changing ``EMBEDDER`` means re-embedding
knowledge and golden paths.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from agentflow.kernel.intents_encoder import WORDLLAMA_MODEL, SentenceEncoder, default_encoder
from agentflow.kernel.llm.base import EmbeddingResponse, TokenUsage

__all__ = ["WORDLLAMA_MODEL", "WordLlamaEmbedder"]

_NATIVE_DIMENSIONS = 256
_CACHE_MAX_CHARS = 2_000  # short texts recur across a run's stages; articles would bloat it


def _load_model() -> SentenceEncoder:
    """The packaged model, shared with the intent classifier: one memory-mapped copy per
    process, never downloaded (`agentflow.kernel.intents_encoder`)."""
    encoder = default_encoder()
    if encoder is None:
        raise ImportError(
            "EMBEDDER=wordllama needs the optional dependency wordllama: "
            "pip install 'agentflow[quality]'"
        )
    return encoder


class WordLlamaEmbedder:
    """WordLlama ``l2_supercat`` vectors, zero-padded to `dimensions`, L2-normalised."""

    name = "wordllama"

    def __init__(self, dimensions: int = 384) -> None:
        if dimensions < _NATIVE_DIMENSIONS:
            raise ValueError(f"dimensions must be at least {_NATIVE_DIMENSIONS}")
        self.dimensions = dimensions
        self.model = WORDLLAMA_MODEL
        self._model = _load_model()
        self._embed_cached = lru_cache(maxsize=8_192)(self._embed_uncached)

    def _embed_uncached(self, text: str) -> npt.NDArray[np.float32]:
        row = self.embed_array([text])[0]
        row.flags.writeable = False
        return row

    def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """One read-only embedding (short texts are cached: stages re-embed the same message)."""
        if len(text) <= _CACHE_MAX_CHARS:
            return self._embed_cached(text)
        return self._embed_uncached(text)

    def embed_array(self, texts: Iterable[str]) -> npt.NDArray[np.float32]:
        """A ``(len(texts), dimensions)`` float32 matrix; a text without tokens is all zeros."""
        batch = list(texts)
        matrix = np.zeros((len(batch), self.dimensions), dtype=np.float32)
        if not batch:
            return matrix
        native = self._model.encode(batch)  # L2-normalised; a text without tokens: zeros
        matrix[:, : native.shape[1]] = native
        return matrix

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        rows: list[list[float]] = self.embed_array(texts).tolist()
        return rows

    async def embed(self, texts: Sequence[str], *, model: str | None = None) -> EmbeddingResponse:
        # Sub-millisecond per text (a lookup and a mean): no thread hop, as for OfflineEmbedder.
        del model
        return EmbeddingResponse(
            vectors=self.embed_sync(texts),
            model=self.model,
            provider="wordllama",
            usage=TokenUsage(prompt_tokens=sum(math.ceil(len(t) / 4) for t in texts if t)),
            cost_usd=0.0,
        )
