"""The beat task that gives large tenants their own vector indexes: only large tenants, once."""

from __future__ import annotations

import pytest
from django.db import connection

from agentflow.models import Agent
from governance.audit import Actor
from learning import golden_paths
from learning.tasks import ensure_vector_indexes_task
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona

pytestmark = pytest.mark.django_db(transaction=True)  # CREATE INDEX CONCURRENTLY: no transaction


def _learn(agent: Agent, count: int) -> None:
    with tenant_scope(agent.tenant_id):
        for i in range(count):
            golden_paths.record_outcome(
                actor=Actor.system("tests"),
                agent=agent,
                question=f"question number {i} about topic {i * 7919}",
                answer="An answer.",
                source="edited",
                score=1.0,
                category=f"C{i}",  # distinct categories: nothing merges
            )


def _tenant_indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'learning_goldenpath' "
            "AND indexdef LIKE '%%tenant_id =%%'"
        )
        return {row[0] for row in cursor.fetchall()}


def _drop_tenant_indexes() -> None:
    from agentflow.vector_search import _tenant_index_cache

    with connection.cursor() as cursor:
        for name in _tenant_indexes():
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
    _tenant_index_cache.clear()


def test_only_tenants_over_the_threshold_get_an_index_and_only_once(
    owner: Persona, agent: Agent, settings: object, request: pytest.FixtureRequest
) -> None:
    small = make_agent(make_persona("Small Co", tier="professional"))
    _learn(agent, 3)
    _learn(small, 1)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "VECTOR_TENANT_INDEX_MIN_ROWS": 3}  # type: ignore[attr-defined]

    built = ensure_vector_indexes_task()
    request.addfinalizer(_drop_tenant_indexes)  # indexes outlive the test's flushed rows

    assert len(built["golden_paths"]) == 1
    assert built["knowledge_chunks"] == []  # the fixture agent's 2 chunks are below 3
    (index,) = _tenant_indexes()
    assert index == built["golden_paths"][0]
    assert str(owner.tenant.pk) in index
    assert ensure_vector_indexes_task() == {"golden_paths": [], "knowledge_chunks": []}
