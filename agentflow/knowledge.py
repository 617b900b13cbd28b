"""Knowledge bases of agents: ingestion (validate, chunk, embed, store) and vector search.

Documents are split into chunks of about `CHUNK_CHARS` characters along the text's own
structure (markdown headings, then paragraphs, lines, sentences, words: never mid-word),
each chunk prefixed with its heading path so it still says what it is about on its own.
Chunks of one section overlap by a sentence or a few words, so an answer that straddles a
boundary is still found whole in one of them.

Search is per agent. pgvector 0.6's HNSW index applies a WHERE filter only *after* it
returned `hnsw.ef_search` candidates of the whole table (all tenants), so a filtered HNSW
query silently returns fewer and worse rows (FINDINGS.md: recall@5 0.67 with 10 tenants).
Per-agent knowledge bases are small (hundreds to thousands of chunks), so the default is an
exact search over the agent's rows found through the B-tree index: recall 1.0 and about
20 ms at 10,000 rows. Only an agent above `EXACT_SEARCH_MAX_ROWS` uses the HNSW index;
the planner lives in `agentflow.vector_search` (shared with golden-path search).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from agentflow.core.prices import operator_price_table
from agentflow.kernel.llm.base import EmbeddingResponse, LLMError
from agentflow.kernel.llm.embeddings import OfflineEmbedder, SentenceTransformerEmbedder
from agentflow.kernel.llm.openai_provider import OpenAIProvider
from agentflow.kernel.llm.resilience import CircuitBreaker
from agentflow.kernel.llm.wordllama_embedder import WordLlamaEmbedder
from agentflow.kernel.vectors import Embedder, Vector, embed_texts
from agentflow.models import EMBEDDING_DIMENSIONS, Agent, KnowledgeChunk, KnowledgeDocument
from agentflow.vector_search import (
    EXACT_SEARCH_MAX_ROWS,
    count_rows,
    exact_statement,
    nearest,
    nearest_exact,
)
from tenants.models import Tenant
from tenants.scoping import require_tenant_id

__all__ = [
    "CHUNK_CHARS",
    "CHUNK_OVERLAP_CHARS",
    "CONTENT_TYPES",
    "EXACT_SEARCH_MAX_ROWS",
    "ChunkHit",
    "EmbedderUnavailable",
    "KnowledgeError",
    "KnowledgeQuotaExceeded",
    "KnowledgeTooLarge",
    "OpenAICompatibleEmbedder",
    "PreparedDocument",
    "UnsupportedContentType",
    "chunk_text",
    "count_chunks",
    "delete_document",
    "embed_query",
    "get_embedder",
    "ingest_document",
    "prepare_document",
    "search_chunks",
    "search_knowledge",
    "store_document",
]

CONTENT_TYPES = ("text/plain", "text/markdown")
CHUNK_CHARS = 800
CHUNK_OVERLAP_CHARS = 120
_EMBED_BATCH = 256  # bounds one embedding request (remote embedders) and its matrix
_INSERT_BATCH = 500
_MAX_TITLE_CHARS = 300  # KnowledgeDocument.title
_MAX_HEADING_CHARS = 200  # a heading path longer than this is cut: it is context, not content


class KnowledgeError(ValueError):
    """A document cannot be ingested; the message says why (the API answers 4xx with it)."""


class UnsupportedContentType(KnowledgeError):
    """Not text/plain or text/markdown (HTTP 415)."""


class KnowledgeTooLarge(KnowledgeError):
    """Above settings.AGENTFLOW["MAX_UPLOAD_BYTES"] (HTTP 413)."""


class KnowledgeQuotaExceeded(KnowledgeError):
    """The tenant's knowledge storage quota would be exceeded."""


# ----------------------------------------------------------------------------- embedder


class EmbedderUnavailable(KnowledgeError):
    """The embeddings server did not answer, or answered vectors of the wrong width (503)."""


_ENV_REFERENCE = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")


class OpenAICompatibleEmbedder:
    """``POST {base_url}/embeddings`` of an OpenAI-compatible server (OpenAI, Ollama, vLLM).

    Every answer is checked against the vector columns' width, so a model of another width
    fails on its first call with a reason instead of at the database.
    """

    dimensions = EMBEDDING_DIMENSIONS

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None) -> None:
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        # Shared by the calls: a server that keeps failing is not waited on by every chunk.
        self._breaker = CircuitBreaker(name=f"embeddings:{model}")

    @property
    def where(self) -> str:
        return f"{self.base_url or 'OpenAI'} ({self.model})"

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        # A client per call: the embedder is cached per process and called from several
        # event loops (async_to_sync, the run loop), and an httpx pool belongs to one loop.
        provider = OpenAIProvider(
            self.model,
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=1,
            name="embeddings",
            breaker=self._breaker,
            embedding_model=self.model,
            # The operator's embedder: priced by LLM_MODEL_PRICES (a local model at 0), never
            # by an agent's llm.prices, though a run's search counts it in the run's cost.
            price_table=operator_price_table(),
        )
        try:
            async with provider:
                response = await provider.embed(texts, model=model)
        except LLMError as exc:
            raise EmbedderUnavailable(f"embeddings server {self.where}: {exc}") from exc
        for vector in response.vectors:
            if len(vector) != EMBEDDING_DIMENSIONS:
                raise EmbedderUnavailable(
                    f"embeddings server {self.where} gives {len(vector)} dimensions; the "
                    f"vector columns hold {EMBEDDING_DIMENSIONS}: choose a model of that width"
                )
        return response


def _openai_embedder(model: str, options: dict[str, Any]) -> OpenAICompatibleEmbedder:
    """The operator's OpenAI-compatible embedder, held to the LLM providers' allowlists."""
    base_url = str(options.get("EMBEDDER_BASE_URL") or "").rstrip("/") or None
    allowed = {str(url).rstrip("/") for url in options.get("LLM_ALLOWED_BASE_URLS", ())}
    if base_url is not None and base_url not in allowed:
        raise ValueError(f"EMBEDDER_BASE_URL {base_url} is not in LLM_ALLOWED_BASE_URLS")
    reference = str(options.get("EMBEDDER_API_KEY") or "")
    api_key = None
    if reference:
        found = _ENV_REFERENCE.match(reference)
        key_vars = options.get("LLM_API_KEY_ENV_VARS", ("OPENAI_API_KEY",))
        if found is None or found.group(1) not in key_vars:
            raise ValueError(
                "EMBEDDER_API_KEY must name one of LLM_API_KEY_ENV_VARS as ${NAME}, not hold a key"
            )
        api_key = os.environ.get(found.group(1)) or None
    return OpenAICompatibleEmbedder(model, base_url=base_url, api_key=api_key)


_EMBEDDER_KINDS = '"offline", "wordllama", "sentence-transformers[:model]" or "openai:model"'


def embedder_issues() -> list[str]:
    """What is wrong with the embedder's settings, found without building it (no model is
    loaded, no server asked): the start-up check (`agentflow.checks`)."""
    options = dict(getattr(settings, "AGENTFLOW", {}))
    spec = str(options.get("EMBEDDER") or "offline")
    kind, _, model = spec.partition(":")
    if kind == "openai" and model:
        try:
            _openai_embedder(model, options)
        except ValueError as exc:
            return [str(exc)]
        return []
    if kind == "wordllama" and not model:
        if importlib.util.find_spec("wordllama") is None:
            return [f"EMBEDDER = {spec!r} needs wordllama: pip install 'agentflow[quality]'"]
        return []
    if kind in ("offline", "sentence-transformers"):
        return []
    return [f"EMBEDDER = {spec!r}: expected {_EMBEDDER_KINDS}"]


@functools.cache
def get_embedder() -> Embedder:
    """The embedder of knowledge chunks and of the messages searched against them.

    `settings.AGENTFLOW["EMBEDDER"]`: "offline" (default), "wordllama" (the `quality` extra:
    semantic, offline, no torch), "sentence-transformers[:model]" (the `local-embeddings`
    extra) or "openai:model" (an OpenAI-compatible server:
    ``EMBEDDER_BASE_URL`` and ``EMBEDDER_API_KEY``, allowed as an agent's provider would be).
    Whatever it is must produce EMBEDDING_DIMENSIONS floats, the width of the vector
    columns. Cached per process; `get_embedder.cache_clear()` after changing the setting.
    """
    options = dict(getattr(settings, "AGENTFLOW", {}))
    spec = str(options.get("EMBEDDER") or "offline")
    kind, _, model = spec.partition(":")
    embedder: Embedder
    if kind == "offline":
        embedder = OfflineEmbedder(EMBEDDING_DIMENSIONS)
    elif kind == "wordllama" and not model:
        embedder = WordLlamaEmbedder(EMBEDDING_DIMENSIONS)
    elif kind == "sentence-transformers":
        embedder = SentenceTransformerEmbedder(model or "all-MiniLM-L6-v2")
    elif kind == "openai" and model:
        embedder = _openai_embedder(model, options)
    else:
        raise ValueError(f"EMBEDDER = {spec!r}: expected {_EMBEDDER_KINDS}")
    dimensions = getattr(embedder, "dimensions", EMBEDDING_DIMENSIONS)
    if dimensions != EMBEDDING_DIMENSIONS:
        raise ValueError(
            f"embedder {spec!r} gives {dimensions} dimensions; the vector columns hold "
            f"{EMBEDDING_DIMENSIONS}"
        )
    return embedder


def _embed(embedder: Embedder, texts: Sequence[str]) -> Vector:
    embed_array = getattr(embedder, "embed_array", None)
    parts = []
    for start in range(0, len(texts), _EMBED_BATCH):
        batch = list(texts[start : start + _EMBED_BATCH])
        if embed_array is not None:  # local and synchronous: no event loop needed
            parts.append(embed_array(batch))
        else:
            parts.append(async_to_sync(embed_texts)(embedder, batch))
    if not parts:
        return np.zeros((0, EMBEDDING_DIMENSIONS), dtype=np.float32)
    matrix: Vector = np.vstack(parts).astype(np.float32, copy=False)
    return matrix


# ----------------------------------------------------------------------------- chunking

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True, slots=True)
class _Section:
    heading: str  # "Install > Linux", "" before the first heading or in plain text
    blocks: tuple[str, ...]


def _sections(text: str, markdown: bool) -> list[_Section]:
    """Split into sections at ATX headings, and sections into blank-line separated blocks.

    Fenced code blocks are one block each and never split by the headings or blank lines
    they contain.
    """
    sections: list[_Section] = []
    path: list[tuple[int, str]] = []
    blocks: list[str] = []
    lines: list[str] = []
    fence: str | None = None

    def end_block() -> None:
        if any(line.strip() for line in lines):
            blocks.append("\n".join(lines).strip("\n"))
        lines.clear()

    def end_section() -> None:
        end_block()
        if blocks:
            heading = " > ".join(title for _, title in path)[:_MAX_HEADING_CHARS]
            sections.append(_Section(heading, tuple(blocks)))
        blocks.clear()

    for line in text.split("\n"):
        fence_mark = _FENCE.match(line) if markdown else None
        if fence is not None:
            lines.append(line)
            if (
                fence_mark
                and fence_mark.group(1)[0] == fence[0]
                and len(fence_mark.group(1)) >= len(fence)
            ):
                fence = None
                end_block()
            continue
        if fence_mark:
            end_block()
            fence = fence_mark.group(1)
            lines.append(line)
            continue
        heading = _HEADING.match(line) if markdown else None
        if heading:
            end_section()
            level = len(heading.group(1))
            path[:] = [(lvl, title) for lvl, title in path if lvl < level]
            if heading.group(2).strip():
                path.append((level, heading.group(2).strip()))
            continue
        if line.strip():
            lines.append(line.rstrip())
        else:
            end_block()
    end_section()
    return sections


def _split_lines(text: str) -> list[str]:
    return text.split("\n")


def _split_sentences(text: str) -> list[str]:
    return _SENTENCE_END.split(text)


def _split_words(text: str) -> list[str]:
    return text.split()


# Coarse to fine: a piece too long for a chunk is split at the next finer boundary.
_SPLITTERS = ((_split_lines, "\n"), (_split_sentences, " "), (_split_words, " "))


def _fit(text: str, limit: int, level: int = 0) -> list[str]:
    """`text` as pieces of at most `limit` characters, cut at the coarsest boundary that works."""
    if len(text) <= limit:
        return [text]
    if level == len(_SPLITTERS):
        # One "word" longer than a chunk (a URL, a hash): it has no boundary to respect.
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    split, joiner = _SPLITTERS[level]
    parts = [part for part in split(text) if part.strip()]
    if len(parts) <= 1:
        return _fit(text, limit, level + 1)
    pieces: list[str] = []
    current = ""
    for part in parts:
        for piece in _fit(part, limit, level + 1):
            joined = f"{current}{joiner}{piece}" if current else piece
            if len(joined) <= limit:
                current = joined
            else:
                pieces.append(current)
                current = piece
    if current:
        pieces.append(current)
    return pieces


def _overlap_tail(text: str, size: int) -> str:
    """The end of `text` to repeat at the start of the next chunk: whole sentences, else words."""
    if size <= 0 or len(text) <= size:
        return ""
    tail = text[-size:]
    sentence = _SENTENCE_END.search(tail)
    if sentence is not None and sentence.end() < len(tail):
        return tail[sentence.end() :].strip()
    space = tail.find(" ")
    # Starting after the first space drops the word the cut went through.
    return tail[space + 1 :].strip() if space >= 0 else ""


def _pack(blocks: Sequence[str], limit: int, overlap: int) -> list[str]:
    """Blocks packed into chunks of at most `limit` characters, consecutive ones overlapping."""
    # Pieces of a long block leave room for the overlap, or it could never be carried.
    room = limit - overlap - 2 if overlap else limit
    pieces = [piece for block in blocks for piece in _fit(block, room)]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    fresh = False  # `current` holds more than the overlap carried from the previous chunk
    for piece in pieces:
        if fresh and size + 2 + len(piece) > limit:
            chunks.append("\n\n".join(current))
            tail = _overlap_tail(chunks[-1], overlap)
            current, size, fresh = ([tail], len(tail), False) if tail else ([], 0, False)
        if current and not fresh and size + 2 + len(piece) > limit:
            current, size = [], 0  # the overlap does not fit beside this piece: drop it
        size += len(piece) + (2 if current else 0)
        current.append(piece)
        fresh = True
    if fresh:
        chunks.append("\n\n".join(current))
    return chunks


def chunk_text(
    text: str,
    content_type: str = "text/markdown",
    *,
    max_chars: int = CHUNK_CHARS,
    overlap_chars: int = CHUNK_OVERLAP_CHARS,
) -> list[str]:
    """Chunks of at most `max_chars` characters (heading path included), in document order."""
    if max_chars < 100:
        raise ValueError("max_chars must be at least 100")
    if not 0 <= overlap_chars < max_chars // 2:
        raise ValueError("overlap_chars must be within [0, max_chars / 2)")
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    chunks: list[str] = []
    for section in _sections(normalised, markdown=content_type == "text/markdown"):
        prefix = f"{section.heading}\n\n" if section.heading else ""
        for body in _pack(section.blocks, max_chars - len(prefix), overlap_chars):
            chunks.append(prefix + body)
    return chunks


# ---------------------------------------------------------------------------- ingestion


def _content_type(value: str) -> str:
    if not isinstance(value, str):
        raise UnsupportedContentType("content type must be a string")
    media, _, params = value.partition(";")
    media = media.strip().lower()
    charset = re.search(r"charset\s*=\s*\"?([\w-]+)", params, re.IGNORECASE)
    if media not in CONTENT_TYPES:
        raise UnsupportedContentType(
            f"content type {value!r} is not supported; use one of {', '.join(CONTENT_TYPES)}"
        )
    if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8", "us-ascii"):
        raise UnsupportedContentType(f"charset {charset.group(1)!r} is not supported; use utf-8")
    return media


def _validated(title: str, content_type: str, text: str) -> tuple[str, str, int]:
    media = _content_type(content_type)
    if not isinstance(text, str):
        raise KnowledgeError(f"text must be a string, not {type(text).__name__}")
    size = len(text.encode("utf-8"))
    limit = settings.AGENTFLOW["MAX_UPLOAD_BYTES"]
    if not isinstance(limit, int):
        raise TypeError('settings.AGENTFLOW["MAX_UPLOAD_BYTES"] must be an int')
    if size > limit:
        raise KnowledgeTooLarge(f"document is {size} bytes; the limit is {limit} bytes")
    if not text.strip():
        raise KnowledgeError("document text is empty")
    if "\x00" in text:
        raise KnowledgeError("document text contains NUL characters; is it really text?")
    title = title.strip() if isinstance(title, str) else ""
    if not title:
        raise KnowledgeError("title must not be empty")
    if len(title) > _MAX_TITLE_CHARS:
        raise KnowledgeError(f"title is longer than {_MAX_TITLE_CHARS} characters")
    return title, media, size


def _check_quota(tenant_id: int, size: int) -> None:
    """Refuse a document that would take the tenant past its knowledge storage quota.

    Locks the tenant row for the rest of the transaction, so concurrent uploads are
    counted one after the other instead of both passing the check.
    """
    tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
    limit = tenant.quotas.knowledge_bytes
    if limit is None:
        return
    used = KnowledgeDocument.objects.aggregate(total=Sum("size_bytes"))["total"] or 0
    if used + size > limit:
        raise KnowledgeQuotaExceeded(
            f"knowledge storage quota exceeded: {used} of {limit} bytes used, "
            f"this document needs {size}"
        )


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A validated document, chunked and embedded, not stored yet (`store_document`)."""

    title: str
    content_type: str
    size_bytes: int
    chunks: list[str]
    vectors: Vector


def prepare_document(*, title: str, content_type: str, text: str) -> PreparedDocument:
    """Validate, chunk and embed a document: the slow part, outside any transaction.

    Raises `KnowledgeError` (or a subclass: `UnsupportedContentType`, `KnowledgeTooLarge`).
    """
    title, media, size = _validated(title, content_type, text)
    chunks = chunk_text(text, media)
    vectors = _embed(get_embedder(), [f"{title}\n{chunk}" for chunk in chunks])
    return PreparedDocument(title, media, size, chunks, vectors)


def store_document(*, agent: Agent, prepared: PreparedDocument) -> KnowledgeDocument:
    """Store a prepared document of `agent` (inside the tenant's scope), within the tenant's
    knowledge quota (`KnowledgeQuotaExceeded`), in one transaction (the caller's if open)."""
    scope = require_tenant_id()
    if agent.tenant_id != scope:
        # Same answer as a missing agent: the caller must not learn that it exists elsewhere.
        raise Agent.DoesNotExist("agent not found")
    with transaction.atomic():
        _check_quota(scope, prepared.size_bytes)
        document = KnowledgeDocument.objects.create(
            tenant_id=scope,
            agent=agent,
            title=prepared.title,
            content_type=prepared.content_type,
            size_bytes=prepared.size_bytes,
        )
        KnowledgeChunk.objects.bulk_create(
            [
                KnowledgeChunk(
                    tenant_id=scope,
                    document=document,
                    agent=agent,
                    index=index,
                    text=chunk,
                    embedding=vector,
                )
                for index, (chunk, vector) in enumerate(
                    zip(prepared.chunks, prepared.vectors, strict=True)
                )
            ],
            batch_size=_INSERT_BATCH,
        )
    return document


def ingest_document(*, agent: Agent, title: str, content_type: str, text: str) -> KnowledgeDocument:
    """Validate, chunk, embed and store one document of `agent` (inside the tenant's scope).

    Raises `KnowledgeError` (or a subclass: `UnsupportedContentType`, `KnowledgeTooLarge`,
    `KnowledgeQuotaExceeded`) and stores nothing when the document is refused. Embedding
    happens before the transaction opens, so no database lock waits on an embedder.
    """
    scope = require_tenant_id()
    if agent.tenant_id != scope:
        raise Agent.DoesNotExist("agent not found")
    prepared = prepare_document(title=title, content_type=content_type, text=text)
    return store_document(agent=agent, prepared=prepared)


def delete_document(*, agent: Agent, document_id: uuid.UUID | str) -> bool:
    """Delete a document of `agent` and its chunks; False when there is no such document."""
    try:
        deleted, _ = KnowledgeDocument.objects.filter(agent=agent, id=document_id).delete()
    except ValidationError:  # not a UUID: no such document either
        return False
    return deleted > 0


# ------------------------------------------------------------------------------ search


@dataclass(frozen=True, slots=True)
class ChunkHit:
    document_id: uuid.UUID
    title: str
    index: int
    text: str
    score: float  # cosine similarity, within (0, 1]

    @property
    def key(self) -> str:
        """Stable id of the chunk: "<document uuid>#<chunk index>"."""
        return f"{self.document_id}#{self.index}"


def _hits(rows: Sequence[dict[str, Any]]) -> list[ChunkHit]:
    return [
        ChunkHit(
            row["document_id"], row["document__title"], row["index"], row["text"], row["similarity"]
        )
        for row in rows
    ]


def count_chunks(agent_id: uuid.UUID | str, cap: int) -> int:
    """The agent's chunk count, counted up to `cap` only (a bounded index scan)."""
    return count_rows(KnowledgeChunk.objects.filter(agent_id=agent_id), cap)


# What `nearest` asks for an agent's chunks over its exact plan, as a constant statement.
_EXACT_CHUNKS_SQL = exact_statement(
    select="c.document_id, d.title, c.index, c.text",
    source="agentflow_knowledgechunk c JOIN agentflow_knowledgedocument d ON d.id = c.document_id",
    where="c.tenant_id = %s AND c.agent_id = %s",
    embedding="c.embedding",
)


def search_chunks(
    agent_id: uuid.UUID | str,
    vector: Vector,
    *,
    limit: int,
    exact_max_rows: int = EXACT_SEARCH_MAX_ROWS,
    agent_rows: int | None = None,
) -> list[ChunkHit]:
    """The `limit` chunks of the agent most similar to `vector`, best first (sync ORM).

    Runs inside the current tenant scope: the agent filter is in the query itself, and the
    scoped manager adds the tenant. `agent_rows` (from `count_chunks`, possibly cached)
    only chooses between exact and index search (`agentflow.vector_search`); it is counted
    when not given.
    """
    fields = ("document_id", "document__title", "index", "text")
    if agent_rows is not None and agent_rows <= exact_max_rows:
        # A run's search (the store passes its cached count): the constant statement.
        params = (require_tenant_id(), agent_id)
        return _hits(nearest_exact(_EXACT_CHUNKS_SQL, params, vector, columns=fields, limit=limit))
    found = nearest(
        KnowledgeChunk.objects.filter(agent_id=agent_id),
        vector,
        limit=limit,
        fields=fields,
        scope_rows=agent_rows,
        exact_max_rows=exact_max_rows,
    )
    return _hits(found)


def embed_query(text: str) -> Vector:
    """One text's embedding by the platform's embedder (sync): what stored vectors match."""
    return _embed(get_embedder(), [text])[0]


def search_knowledge(*, agent: Agent, query: str, limit: int = 5) -> list[ChunkHit]:
    """Search `agent`'s knowledge base with a text query (sync; API and dashboard helper)."""
    vector = embed_query(query)
    return search_chunks(agent.id, vector, limit=limit)
