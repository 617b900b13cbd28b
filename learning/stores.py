"""The learning loop's kernel stores: golden paths and playbooks for an agent's pipeline.

Both are searched in the pipeline's parallel context stage, inside the run's tenant scope
(the Celery task enters it; ``sync_to_async`` carries the context variable into the
thread), so a search can only ever see the tenant's own rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection

from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import GoldenPath as KernelGoldenPath
from agentflow.kernel.stores import Playbook as KernelPlaybook
from agentflow.kernel.vectors import Vector
from agentflow.models import Agent
from agentflow.vector_search import EXACT_SEARCH_MAX_ROWS, count_rows
from governance.audit import Actor
from learning import golden_paths
from learning.models import GoldenPath, GoldenPathSource, PlaybookStatus
from tenants.scoping import require_tenant_id

__all__ = ["DjangoGoldenPathStore", "DjangoProceduralStore"]


class DjangoGoldenPathStore:
    """The tenant's active golden paths: the agent's own, or every agent's (``tenant_wide``).

    Ids are the golden paths' UUIDs, titles their questions, texts their answers.
    """

    def __init__(
        self, agent_id: Any, *, tenant_wide: bool = False, count_ttl_seconds: float = 60.0
    ) -> None:
        self.agent_id = str(agent_id)
        self.tenant_wide = tenant_wide
        self.count_ttl_seconds = count_ttl_seconds
        # (monotonic time, row count): it only picks exact or index search, never which
        # rows may be found, so a count a minute old is good enough and saves a query.
        self._counted: tuple[float, int] | None = None

    def _rows(self) -> Any:
        rows = GoldenPath.objects.filter(is_active=True)
        return rows if self.tenant_wide else rows.filter(agent_id=self.agent_id)

    def _search(
        self, vector: Vector, limit: int, intent: str | None = None
    ) -> list[dict[str, Any]]:
        now = time.monotonic()
        counted = self._counted
        if counted is None or now - counted[0] > self.count_ttl_seconds:
            counted = (now, count_rows(self._rows(), EXACT_SEARCH_MAX_ROWS + 1))
            self._counted = counted
        # A category is a subset of the counted rows: small stays small (exact search), a
        # large scope is counted again with the category filter.
        small = counted[1] <= EXACT_SEARCH_MAX_ROWS
        return golden_paths.search_answers(
            vector,
            agent_id=None if self.tenant_wide else self.agent_id,
            limit=limit,
            scope_rows=counted[1] if small or not intent else None,
            intent=intent,
        )

    async def search(
        self, query: str, vector: Vector, *, limit: int, intent: str | None = None
    ) -> list[ContextItem]:
        """Best first; with an intent, only golden paths that may answer it (its category's
        and uncategorised ones, see ``golden_path_matches``)."""
        hits = await sync_to_async(self._search)(vector, limit, intent)
        return [
            ContextItem(
                "golden_path", str(hit["id"]), hit["question"], hit["answer"], hit["similarity"]
            )
            for hit in hits
        ]

    def _add(self, paths: list[KernelGoldenPath]) -> None:
        agent = Agent.objects.get(pk=self.agent_id)
        for path in paths:
            golden_paths.record_outcome(
                actor=Actor.system("library"),
                agent=agent,
                question=path.question,
                answer=path.answer,
                source=GoldenPathSource.APPROVED,
                score=1.0,
                category=path.category,
                trace={"metadata": path.metadata} if path.metadata else None,
                vector=path.vector,
            )
        self._counted = None

    async def add(self, paths: Sequence[KernelGoldenPath]) -> None:
        """Golden paths given in code (the builder's ``with_golden_paths``), as approved."""
        await sync_to_async(self._add)(list(paths))


_ACTIVE_PLAYBOOK_SQL = """
SELECT id, category, name, steps, version, success_rate FROM learning_playbook
WHERE tenant_id = %s AND agent_id = %s AND category = %s AND status = %s
ORDER BY version DESC LIMIT 1
"""


class DjangoProceduralStore:
    """The agent's active playbook per category, suggested before the answer."""

    def __init__(self, agent_id: Any) -> None:
        self.agent_id = str(agent_id)

    def _get(self, intent: str) -> KernelPlaybook | None:
        """``playbooks.suggestion``'s playbook (the category's active version), as one
        constant statement reading only what the kernel needs: it runs before every answer,
        and the queryset's compilation and the unused JSON columns cost more than the query
        (issue 15)."""
        with connection.cursor() as cursor:
            cursor.execute(
                _ACTIVE_PLAYBOOK_SQL,
                [require_tenant_id(), self.agent_id, intent, PlaybookStatus.ACTIVE],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        playbook_id, category, name, steps, version, success_rate = row
        return KernelPlaybook(
            intent=category,
            name=name,
            steps=tuple(json.loads(steps) if isinstance(steps, str) else steps),
            version=version,
            success_rate=success_rate,
            id=str(playbook_id),
        )

    async def get_playbook(self, intent: str) -> KernelPlaybook | None:
        return await sync_to_async(self._get)(intent)

    async def save_playbook(self, playbook: KernelPlaybook) -> None:
        """Playbooks are extracted from traces (``learning.playbooks``), not written in."""
        raise TypeError(
            "Platform playbooks are extracted from successful runs; "
            "use POST /api/v1/learning/playbooks/extract"
        )
