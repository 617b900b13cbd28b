"""Embedding helpers and a small in-memory vector index.

The pipeline embeds each message once and shares the vector between thread
detection, memory, knowledge and golden-path search, so the stores take a
ready vector instead of text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from agentflow.kernel.llm.base import EmbeddingResponse

Vector = npt.NDArray[np.float32]
T = TypeVar("T")


class Embedder(Protocol):
    """Anything with the provider `embed` signature (OfflineEmbedder, LLM providers)."""

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse: ...


def as_matrix(rows: Sequence[Sequence[float]] | npt.NDArray[Any]) -> Vector:
    """Rows as a float32 matrix with L2-normalised rows (zero rows stay zero)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


async def embed_texts(embedder: Embedder, texts: Sequence[str]) -> Vector:
    """Embed `texts` into a normalised (n, d) matrix.

    Local embedders exposing `embed_array` (the OfflineEmbedder) are called directly:
    no coroutine, no response object, no list-of-floats round trip.
    """
    embed_array = getattr(embedder, "embed_array", None)
    if embed_array is not None:
        return as_matrix(embed_array(list(texts)))
    response = await embedder.embed(list(texts))
    return as_matrix(response.vectors)


async def embed_text(embedder: Embedder, text: str) -> Vector:
    """One normalised vector; the hot-path variant of `embed_texts` (read-only result)."""
    embed_one = getattr(embedder, "embed_one", None)
    if embed_one is not None:
        vector: Vector = embed_one(text)
        return vector
    return (await embed_texts(embedder, [text]))[0]


class VectorIndex(Generic[T]):
    """Exact top-k search over a few thousand normalised vectors.

    The stacked matrix is rebuilt lazily after additions, so a burst of adds costs
    one stack at the next search.
    """

    __slots__ = ("_items", "_matrix", "_rows")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._rows: list[Vector] = []
        self._matrix: Vector | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, vector: Vector) -> None:
        self._items.append(item)
        self._rows.append(vector)
        self._matrix = None

    def remove_where(self, predicate: Any) -> int:
        keep = [i for i, item in enumerate(self._items) if not predicate(item)]
        removed = len(self._items) - len(keep)
        if removed:
            self._items = [self._items[i] for i in keep]
            self._rows = [self._rows[i] for i in keep]
            self._matrix = None
        return removed

    def items(self) -> list[T]:
        return list(self._items)

    def search(self, vector: Vector, limit: int, min_score: float = 0.0) -> list[tuple[T, float]]:
        size = len(self._items)
        if not size or limit <= 0:
            return []
        if self._matrix is None:
            self._matrix = np.vstack(self._rows)
        scores = self._matrix.dot(vector)
        if size > limit:
            # Best `limit` rows without a full sort, then those few sorted.
            index = scores.argpartition(size - limit)[size - limit :]
            index = index[scores[index].argsort()[::-1]]
        else:
            index = scores.argsort()[::-1]
        items = self._items
        return [
            (items[i], min(1.0, score))
            for i, score in zip(index.tolist(), scores[index].tolist(), strict=True)
            if score > min_score
        ]
