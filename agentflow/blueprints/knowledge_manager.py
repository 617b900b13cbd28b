"""`knowledge_manager_agent`: config and the tenant-scoped `KnowledgeBase` port.

The port reads, inside the run's tenant scope, the watched agents' escalated or
low-confidence runs, their knowledge chunks (coverage by vector similarity, articles with
the mean of their chunks' embeddings) and the tenant's approved golden paths; the kernel
agent (`agentflow.kernel.blueprints.knowledge_manager`) does the clustering and drafting
with the platform's embedder (`agentflow.knowledge.get_embedder`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.db.models import Q
from pydantic import BaseModel, ConfigDict, Field

from agentflow.blueprints import BlueprintConfig, BlueprintSpec
from agentflow.kernel.blueprints.knowledge_manager import (
    Article,
    Coverage,
    GoldenAnswer,
    KnowledgeManagerAgent,
    Question,
)
from agentflow.kernel.config import ConfigIssue
from agentflow.kernel.vectors import Vector
from agentflow.knowledge import get_embedder
from agentflow.models import Agent, KnowledgeChunk, KnowledgeDocument, Run
from agentflow.vector_search import nearest
from learning.models import GoldenPath, GoldenPathSource

__all__ = ["SPEC", "SUPPORT_BLUEPRINT", "KnowledgeManagerConfig", "TenantKnowledge"]

SUPPORT_BLUEPRINT = "support_agent"  # what a watched list left empty means


class KnowledgeManagerConfig(BlueprintConfig):
    """Config of the `knowledge_manager_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, title="knowledge_manager_agent config"
    )

    watched_agents: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=100,
        description="Agents whose runs and knowledge are managed; empty: every support_agent "
        "of the tenant (the agents customers ask).",
    )
    lookback_days: int = Field(30, ge=1, le=365, description="Questions of the last N days.")
    low_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="A run answered below this confidence is a question."
    )
    max_questions: int = Field(500, ge=1, le=5000, description="Questions read per gap search.")
    cluster_similarity: float = Field(
        0.35, ge=0.0, le=1.0, description="Cosine similarity for a question to join a cluster."
    )
    min_cluster_size: int = Field(2, ge=1, le=1000, description="Smallest cluster reported.")
    max_gaps: int = Field(
        20,
        ge=1,
        le=200,
        description="Gaps reported (largest first); at most 5 clusters per "
        "gap are checked for coverage.",
    )
    coverage_similarity: float = Field(
        0.3, ge=0.0, le=1.0, description="A cluster with a chunk this similar is covered."
    )
    duplicate_similarity: float = Field(
        0.9, ge=0.0, le=1.0, description="Articles at least this similar are near-duplicates."
    )
    stale_days: int = Field(180, ge=1, le=3650, description="Articles older than this are stale.")
    max_articles: int = Field(2000, ge=1, le=10_000, description="Articles compared per run.")
    draft_similarity: float = Field(
        0.3, ge=0.0, le=1.0, description="Golden paths at least this similar to a topic are used."
    )
    draft_max_answers: int = Field(5, ge=1, le=20, description="Golden paths per draft.")


def _check(model: BaseModel) -> list[ConfigIssue]:
    assert isinstance(model, KnowledgeManagerConfig)
    seen: set[uuid.UUID] = set()
    issues = []
    for index, agent_id in enumerate(model.watched_agents):
        if agent_id in seen:
            issues.append(ConfigIssue(f"watched_agents[{index}]", "agent listed twice"))
        seen.add(agent_id)
    return issues


class TenantKnowledge:
    """The `KnowledgeBase` port over the current tenant's rows (runs enter its scope)."""

    def __init__(self, agent_id: uuid.UUID, watched: Sequence[str]) -> None:
        self.agent_id = agent_id
        self.watched = list(watched)

    def _agents(self) -> list[Any]:
        if self.watched:
            return list(Agent.objects.filter(id__in=self.watched).values_list("id", flat=True))
        # Customers' questions go to support agents; other blueprints' runs (an auditor's,
        # a code review's) escalate for reasons no article would fix.
        default = Agent.objects.filter(blueprint=SUPPORT_BLUEPRINT).exclude(id=self.agent_id)
        return list(default.values_list("id", flat=True))

    def managed_agent_ids(self) -> list[Any]:
        """The agents whose knowledge this librarian manages (an approved draft joins it)."""
        return self._agents()

    def _questions(self, since: datetime, low: float, limit: int) -> list[Question]:
        rows = (
            Run.objects.filter(agent_id__in=self._agents(), created_at__gte=since)
            .filter(Q(result__escalated=True) | Q(result__confidence__lt=low))
            .order_by("-created_at")
            .values("id", "input", "result__escalated", "result__confidence")[:limit]
        )
        return [
            Question(
                row["input"],
                str(row["id"]),
                bool(row["result__escalated"]),
                float(row["result__confidence"] or 0.0),
            )
            for row in rows
        ]

    async def questions(
        self, since: datetime, *, low_confidence: float, limit: int
    ) -> list[Question]:
        return await sync_to_async(self._questions)(since, low_confidence, limit)

    def _coverage(self, vector: Vector) -> Coverage | None:
        agents = self._agents()
        if not agents:  # (an empty IN cannot be compiled into the vector search's SQL)
            return None
        chunks = KnowledgeChunk.objects.filter(agent_id__in=agents)
        found = nearest(chunks, vector, limit=1, fields=("document_id", "document__title"))
        if not found:
            return None
        row = found[0]
        return Coverage(str(row["document_id"]), row["document__title"], float(row["similarity"]))

    async def coverage(self, vector: Vector) -> Coverage | None:
        return await sync_to_async(self._coverage)(vector)

    def _articles(self, limit: int) -> list[Article]:
        documents = list(
            KnowledgeDocument.objects.filter(agent_id__in=self._agents())
            .order_by("created_at", "id")
            .values("id", "title", "agent_id", "created_at")[:limit]
        )
        sums: dict[Any, Any] = {}
        chunks = KnowledgeChunk.objects.filter(document_id__in=[d["id"] for d in documents])
        for document_id, embedding in chunks.values_list("document_id", "embedding"):
            vector = np.asarray(embedding, dtype=np.float32)
            sums[document_id] = vector if document_id not in sums else sums[document_id] + vector
        return [
            Article(str(d["id"]), d["title"], str(d["agent_id"]), d["created_at"], sums[d["id"]])
            for d in documents
            if d["id"] in sums
        ]

    async def articles(self, *, limit: int) -> list[Article]:
        return await sync_to_async(self._articles)(limit)

    def _golden(self, vector: Vector, limit: int, minimum: float) -> list[GoldenAnswer]:
        approved = GoldenPath.objects.filter(
            is_active=True, source__in=(GoldenPathSource.APPROVED, GoldenPathSource.EDITED)
        )
        # Not its own: an approved draft becomes a golden path of this agent (the learning
        # loop), and a draft must come from answers given to customers.
        agents = self._agents()
        if not agents:
            return []
        approved = approved.filter(agent_id__in=agents)
        found = nearest(
            approved, vector, limit=limit, fields=("id", "question", "answer", "source")
        )
        return [
            GoldenAnswer(
                str(row["id"]), row["question"], row["answer"], row["source"], row["similarity"]
            )
            for row in found
            if row["similarity"] >= minimum
        ]

    async def golden_answers(
        self, vector: Vector, *, limit: int, min_similarity: float
    ) -> list[GoldenAnswer]:
        return await sync_to_async(self._golden)(vector, limit, min_similarity)


def _ports(agent: Agent, config: dict[str, Any]) -> Mapping[str, Any]:
    watched = [str(value) for value in config.get("watched_agents") or ()]
    return {"knowledge": TenantKnowledge(agent.id, watched), "embedder": get_embedder()}


SPEC = BlueprintSpec(
    name="knowledge_manager_agent",
    description="Finds knowledge gaps (clusters of escalated or low-confidence questions no "
    "article covers), near-duplicate and stale articles, and drafts articles from approved "
    "answers for a reviewer.",
    config_model=KnowledgeManagerConfig,
    agent_class=KnowledgeManagerAgent,
    ports=_ports,
    check=_check,
)
