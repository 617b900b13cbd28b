"""`agentflow.vector_search.nearest` keeps the tenant filter on both of its plans.

The trap (FINDINGS.md): pgvector 0.6 filters HNSW candidates only after the index chose
them among all tenants. Whatever the plan, a search in tenant A must return A's rows only,
even when tenant B holds near-copies that are closer to the query.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from pgvector import Vector as PgVector
from pgvector.django import CosineDistance

from agentflow import knowledge, vector_search
from agentflow.models import Agent, KnowledgeChunk, KnowledgeDocument
from agentflow.vector_search import count_rows, nearest
from learning import golden_paths
from learning.models import GoldenPath, GoldenPathSource
from tenants.context import tenant_scope
from tenants.models import Tenant
from tenants.scoping import TenantScopeMissing
from tests.db_roles import as_superuser

DIMENSIONS = 384
ROWS_PER_TENANT = 300


def low_rank(rng: np.random.Generator, count: int, rank: int = 12) -> np.ndarray:
    """Vectors on a few directions plus noise: clustered like text embeddings, not uniform."""
    basis = rng.standard_normal((rank, DIMENSIONS))
    points = rng.standard_normal((count, rank)) @ basis
    points += 0.3 * rng.standard_normal((count, DIMENSIONS))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def add_paths(tenant: Tenant, agent: Agent, vectors: np.ndarray, *, active: bool = True) -> None:
    with tenant_scope(tenant.id):
        GoldenPath.objects.bulk_create(
            GoldenPath(
                tenant=tenant,
                agent=agent,
                category="card_arrival",
                question=f"question {i}",
                answer=f"answer {i} of {tenant.slug}",
                source=GoldenPathSource.APPROVED,
                score=0.9,
                is_active=active,
                embedding=vector,
            )
            for i, vector in enumerate(vectors)
        )


def search(
    tenant: Tenant,
    agent: Agent,
    vector: np.ndarray,
    limit: int = 5,
    exact_max_rows: int = vector_search.EXACT_SEARCH_MAX_ROWS,
) -> list[dict[str, Any]]:
    with tenant_scope(tenant.id):
        rows = GoldenPath.objects.filter(agent_id=agent.id, is_active=True)
        return nearest(
            rows,
            vector,
            limit=limit,
            fields=("id", "tenant_id", "answer"),
            exact_max_rows=exact_max_rows,
        )


class World:
    def __init__(self) -> None:
        self.tenant_a = Tenant.objects.create(name="A", slug="tenant-a")
        self.tenant_b = Tenant.objects.create(name="B", slug="tenant-b")
        with tenant_scope(self.tenant_a.id):
            self.agent_a = Agent.objects.create(name="support", blueprint="support_agent")
        with tenant_scope(self.tenant_b.id):
            self.agent_b = Agent.objects.create(name="support", blueprint="support_agent")
        rng = np.random.default_rng(42)
        self.vectors = low_rank(rng, ROWS_PER_TENANT)
        # B holds near-copies of A's vectors (cosine ~0.999): closer to a query made of
        # B's own vector than A's row it was copied from.
        copies = self.vectors + 0.002 * rng.standard_normal(self.vectors.shape)
        self.copies = copies / np.linalg.norm(copies, axis=1, keepdims=True)
        add_paths(self.tenant_a, self.agent_a, self.vectors)
        add_paths(self.tenant_b, self.agent_b, self.copies)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE learning_goldenpath")  # the HNSW plan reads the table size


@pytest.fixture
def world(db: None) -> World:
    return World()


@pytest.fixture
def hnsw_only(db: None) -> None:
    """Make PostgreSQL take the HNSW index whenever it can (a 600-row table would be sorted).

    With sorting disabled, an `ORDER BY embedding <=> q` query is served by the index;
    SET LOCAL ends with the test's transaction.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")


def ef_search_raised(queries: CaptureQueriesContext) -> bool:
    return any("set_config('hnsw.ef_search'" in q["sql"] for q in queries.captured_queries)


def test_exact_path_returns_only_the_tenants_rows(world: World) -> None:
    for i in range(0, ROWS_PER_TENANT, 30):
        with CaptureQueriesContext(connection) as queries:
            found = search(world.tenant_a, world.agent_a, world.copies[i], limit=10)
        assert not ef_search_raised(queries), "a small scope is searched exactly"
        assert len(found) == 10
        assert {row["tenant_id"] for row in found} == {world.tenant_a.id}
        best = found[0]
        assert best["answer"] == f"answer {i} of tenant-a"
        assert 0.99 < float(best["similarity"]) <= 1.0
        assert [row["similarity"] for row in found] == sorted(
            (row["similarity"] for row in found), reverse=True
        )


def test_hnsw_path_returns_only_the_tenants_rows(world: World, hnsw_only: None) -> None:
    with tenant_scope(world.tenant_a.id):
        rows = GoldenPath.objects.filter(agent_id=world.agent_a.id, is_active=True)
        by_distance = rows.annotate(d=CosineDistance("embedding", world.copies[0])).order_by("d")
        assert "golden_path_hnsw" in by_distance[:5].explain(), "the index serves this query"
    for i in range(0, ROWS_PER_TENANT, 30):
        with CaptureQueriesContext(connection) as queries:
            found = search(world.tenant_a, world.agent_a, world.copies[i], exact_max_rows=0)
        assert ef_search_raised(queries), "exact_max_rows=0 forces the HNSW plan"
        assert found, "B's closer near-copies must not crowd A's rows out"
        assert {row["tenant_id"] for row in found} == {world.tenant_a.id}
        assert found[0]["answer"] == f"answer {i} of tenant-a"
    # And from B's side: A's rows are never returned either.
    found = search(world.tenant_b, world.agent_b, world.vectors[0], exact_max_rows=0)
    assert found
    assert {row["tenant_id"] for row in found} == {world.tenant_b.id}


def test_another_tenants_agent_finds_nothing(world: World) -> None:
    for limit_rows in (vector_search.EXACT_SEARCH_MAX_ROWS, 0):
        found = search(world.tenant_a, world.agent_b, world.copies[0], exact_max_rows=limit_rows)
        assert found == []


def test_inactive_rows_and_degenerate_queries(world: World) -> None:
    add_paths(world.tenant_a, world.agent_a, world.copies[:5], active=False)
    found = search(world.tenant_a, world.agent_a, world.copies[0], limit=3)
    assert len(found) == 3
    assert found[0]["answer"] == "answer 0 of tenant-a"  # the active row, not the inactive copy
    assert search(world.tenant_a, world.agent_a, np.zeros(DIMENSIONS)) == []
    assert search(world.tenant_a, world.agent_a, world.copies[0], limit=0) == []
    # Rows at or below zero similarity are no match at all rather than a bad one.
    opposite = search(world.tenant_a, world.agent_a, -world.vectors[0], limit=ROWS_PER_TENANT)
    assert opposite
    assert all(float(row["similarity"]) > 0 for row in opposite)
    assert len(opposite) < ROWS_PER_TENANT  # the row itself (similarity -1) is not among them


def test_hnsw_recall_matches_exact_on_a_small_set(world: World, hnsw_only: None) -> None:
    rng = np.random.default_rng(7)
    queries = [unit(world.vectors[i] + 0.5 * rng.standard_normal(DIMENSIONS)) for i in
               range(0, ROWS_PER_TENANT, 15)]  # fmt: skip
    recalls = []
    for query in queries:
        exact = {row["id"] for row in search(world.tenant_a, world.agent_a, query)}
        approximate = {
            row["id"] for row in search(world.tenant_a, world.agent_a, query, exact_max_rows=0)
        }
        assert len(exact) == 5
        recalls.append(len(exact & approximate) / len(exact))
    assert float(np.mean(recalls)) >= 0.9, recalls


def test_count_rows_is_bounded(world: World) -> None:
    with tenant_scope(world.tenant_a.id):
        rows = GoldenPath.objects.filter(agent_id=world.agent_a.id)
        assert count_rows(rows, 50) == 50
        assert count_rows(rows, 10_000) == ROWS_PER_TENANT


def test_settings_are_put_back_inside_a_callers_transaction(world: World) -> None:
    with transaction.atomic():
        search(world.tenant_a, world.agent_a, world.copies[0], exact_max_rows=0)
        with connection.cursor() as cursor:
            cursor.execute("SHOW hnsw.ef_search")
            assert cursor.fetchone()[0] == "40"


def test_the_plan_sizes_ef_search_by_the_scopes_share_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vector_search, "_pgvector_version", lambda: (0, 6, 2))
    monkeypatch.setattr(vector_search, "_table_rows", lambda model: 1_000_000)
    monkeypatch.setattr(vector_search, "_tenant_indexes", lambda model: {7: 100_000})
    exact_max = vector_search.EXACT_SEARCH_MAX_ROWS

    def plan(scope_rows: int, tenant_id: int | None = None) -> tuple[bool, int | None]:
        found = vector_search._plan(GoldenPath, scope_rows, 5, exact_max, tenant_id)
        return found.exact, found.ef_search

    assert plan(exact_max) == (True, None)
    assert plan(95_000) == (False, 211)  # 9.5% of the table: ~4 in-scope candidates per row
    assert plan(15_000) == (True, None)  # 1.5%: ef_search would pass 1000
    assert plan(95_000, tenant_id=7) == (False, 40)  # the tenant's own index: no over-fetch
    assert plan(95_000, tenant_id=8) == (False, 211)  # another tenant: the shared index


def test_a_tenants_partial_index_serves_its_searches_only(world: World, hnsw_only: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no index build with pending FK checks
    name = vector_search.create_tenant_index(GoldenPath, world.tenant_a.id, concurrently=False)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE learning_goldenpath")
    assert vector_search._tenant_indexes(GoldenPath) == {world.tenant_a.id: ROWS_PER_TENANT}
    with tenant_scope(world.tenant_a.id):
        rows = GoldenPath.objects.filter(agent_id=world.agent_a.id, is_active=True)
        by_distance = rows.annotate(d=CosineDistance("embedding", world.copies[0])).order_by("d")
        assert name in by_distance[:5].explain(), "the scoped query matches the partial index"
    for i in range(0, ROWS_PER_TENANT, 30):
        with CaptureQueriesContext(connection) as queries:
            found = search(world.tenant_a, world.agent_a, world.copies[i], exact_max_rows=0)
        assert ef_search_raised(queries)
        assert {row["tenant_id"] for row in found} == {world.tenant_a.id}
        assert found[0]["answer"] == f"answer {i} of tenant-a"
    # Tenant B has no index of its own: the shared one, still filtered to B.
    found = search(world.tenant_b, world.agent_b, world.vectors[0], exact_max_rows=0)
    assert found
    assert {row["tenant_id"] for row in found} == {world.tenant_b.id}
    assert vector_search.ensure_tenant_indexes(
        GoldenPath, min_rows=ROWS_PER_TENANT, concurrently=False
    ) == [f"learning_goldenpath_hnsw_t{world.tenant_b.id}"], "only the missing one is built"


@pytest.mark.django_db(transaction=True)
def test_settings_end_with_the_searchs_own_transaction() -> None:
    world = World()
    assert connection.get_autocommit()
    with CaptureQueriesContext(connection) as queries:
        found = search(world.tenant_a, world.agent_a, world.copies[0], exact_max_rows=0)
    assert ef_search_raised(queries)
    assert found[0]["answer"] == "answer 0 of tenant-a"
    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"


def test_an_invalid_tenant_index_is_ignored_then_rebuilt(world: World) -> None:
    """What a failed CREATE INDEX CONCURRENTLY leaves behind (simulated: superuser)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    name = vector_search.create_tenant_index(GoldenPath, world.tenant_a.id, concurrently=False)
    with as_superuser() as cursor:  # the catalog: not the app role's to write
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", [name]
        )
    vector_search._tenant_index_cache.clear()
    assert world.tenant_a.id not in vector_search._tenant_indexes(GoldenPath)
    built = vector_search.ensure_tenant_indexes(
        GoldenPath, min_rows=ROWS_PER_TENANT, concurrently=False
    )
    assert name in built
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", [name])
        assert cursor.fetchone()[0] is True


@pytest.mark.django_db
def test_a_query_vectors_text_reads_back_as_the_float32_pgvector_would_send() -> None:
    rng = np.random.default_rng(7)
    vector = (rng.standard_normal(DIMENSIONS) * 1e-3).astype(np.float32)
    vector[:4] = [1e-38, -3.4e38, 0.0, 0.123456789]  # the smallest normal, the largest, zero
    ours = vector_search.vector_literal(vector)
    pgvectors = PgVector._to_db(vector)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::vector = %s::vector, %s::vector::text", [ours, pgvectors, ours])
        same, text = cursor.fetchone()
    assert same
    assert np.array_equal(np.array(text[1:-1].split(","), dtype=np.float32), vector)
    assert len(ours) < len(pgvectors)


# --- a run's searches: the exact plan as one constant statement (issue 15) -----------------


def _orm_answers(agent_id: Any, vector: np.ndarray, limit: int, intent: str | None) -> list[Any]:
    """What `nearest`'s queryset plan finds for a run's golden-path search."""
    rows = GoldenPath.objects.filter(is_active=True)
    if agent_id is not None:
        rows = rows.filter(agent_id=agent_id)
    if intent:
        rows = rows.filter(category__in=[intent, ""])
    fields = ("id", "question", "answer")
    return nearest(rows, vector, limit=limit, fields=fields, scope_rows=len(rows))


def _rounded(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(*(row[key] for key in row if key != "similarity"), round(row["similarity"], 5))
            for row in found]  # fmt: skip


def test_a_runs_golden_path_search_finds_what_the_queryset_plan_finds(world: World) -> None:
    """`search_answers` with a small scope (the store's count) runs a constant statement:
    the same rows, order and similarities as the queryset, tenant, agent, activity and
    category filters included, against B's closer near-copies."""
    rng = np.random.default_rng(3)
    with tenant_scope(world.tenant_a.id):
        paths = GoldenPath.objects.filter(agent_id=world.agent_a.id)
        paths.filter(question__in=[f"question {i}" for i in range(0, 60)]).update(category="")
        paths.filter(question__in=[f"question {i}" for i in range(60, 120)]).update(
            category="card_payment_fee"
        )
        paths.filter(question__in=[f"question {i}" for i in range(120, 140)]).update(
            is_active=False
        )
    other_agent_paths = low_rank(rng, 20)
    with tenant_scope(world.tenant_a.id):
        other_agent = Agent.objects.create(name="sales", blueprint="support_agent")
    add_paths(world.tenant_a, other_agent, other_agent_paths)
    queries = [world.copies[i] for i in (0, 70, 130, 200)] + [-world.vectors[5]]
    with tenant_scope(world.tenant_a.id):
        for vector in queries:
            for agent_id in (world.agent_a.id, None, world.agent_b.id):
                for intent in (None, "card_arrival", "card_payment_fee", "unknown"):
                    for limit in (1, 5, 400):
                        expected = _orm_answers(agent_id, vector, limit, intent)
                        with CaptureQueriesContext(connection) as statements:
                            found = golden_paths.search_answers(
                                vector, agent_id=agent_id, limit=limit, scope_rows=1, intent=intent
                            )
                        assert len(statements) == 1
                        assert '"learning_goldenpath"."id"' not in statements[0]["sql"]  # no ORM
                        assert _rounded(found) == _rounded(expected), (agent_id, intent, limit)
        assert golden_paths.search_answers(np.zeros(DIMENSIONS), scope_rows=1) == []
        assert golden_paths.search_answers(world.copies[0], limit=0, scope_rows=1) == []
    with tenant_scope(world.tenant_b.id):
        found = golden_paths.search_answers(world.vectors[0], agent_id=None, scope_rows=1)
    assert {row["answer"].split(" of ")[1] for row in found} == {"tenant-b"}
    with pytest.raises(TenantScopeMissing):
        golden_paths.search_answers(world.vectors[0], scope_rows=1)


def test_a_runs_knowledge_search_finds_what_the_queryset_plan_finds(world: World) -> None:
    rng = np.random.default_rng(5)
    for tenant, agent, vectors in (
        (world.tenant_a, world.agent_a, world.vectors[:40]),
        (world.tenant_b, world.agent_b, world.copies[:40]),
    ):
        with tenant_scope(tenant.id):
            documents = [
                KnowledgeDocument.objects.create(
                    agent=agent,
                    title=f"doc {d} of {tenant.slug}",
                    content_type="text/plain",
                    size_bytes=1,
                )
                for d in range(4)
            ]
            KnowledgeChunk.objects.bulk_create(
                KnowledgeChunk(
                    document=documents[i % 4],
                    agent=agent,
                    index=i,
                    text=f"chunk {i}",
                    embedding=vector,
                )
                for i, vector in enumerate(vectors)
            )
    queries = [world.copies[i] for i in (0, 7, 33)] + [unit(rng.standard_normal(DIMENSIONS))]
    with tenant_scope(world.tenant_a.id):
        for vector in queries:
            for agent_id in (world.agent_a.id, world.agent_b.id):
                for limit in (1, 5, 100):
                    expected = knowledge.search_chunks(agent_id, vector, limit=limit)  # counts
                    with CaptureQueriesContext(connection) as statements:
                        found = knowledge.search_chunks(agent_id, vector, limit=limit, agent_rows=1)
                    assert '"agentflow_knowledgechunk"."document_id"' not in statements[0]["sql"]
                    assert [(h.key, h.title, h.text, round(h.score, 5)) for h in found] == [
                        (h.key, h.title, h.text, round(h.score, 5)) for h in expected
                    ]
                    if agent_id == world.agent_a.id:
                        assert found
                        assert all(h.title.endswith("tenant-a") for h in found)
                    else:
                        assert found == []


def test_a_prepared_index_search_keeps_the_tenants_partial_index(
    world: World, hnsw_only: None
) -> None:
    """With prepared statements (DB_PREPARE_THRESHOLD), PostgreSQL may plan a statement
    once for any parameters: a generic plan knows no tenant, and the tenant's partial HNSW
    index, which makes its searches exact enough, would be left unused. The search asks
    for custom plans."""
    assert connection.settings_dict["OPTIONS"].get("prepare_threshold")
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    name = vector_search.create_tenant_index(GoldenPath, world.tenant_a.id, concurrently=False)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE learning_goldenpath")
        # The server's choice, as a postgresql.conf may make it: PostgreSQL would otherwise
        # keep custom plans here only because it estimates them cheaper.
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", [name])
        scans_before = cursor.fetchone()[0]
    searches = 12
    for i in range(searches):
        found = search(world.tenant_a, world.agent_a, world.copies[i], exact_max_rows=0)
        assert found[0]["answer"] == f"answer {i} of tenant-a"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_get_xact_numscans(%s::regclass)", [name])
        assert cursor.fetchone()[0] - scans_before >= searches
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ['%ORDER BY ("learning_goldenpath"."embedding" <=> $%'],
        )
        plans = cursor.fetchall()
    assert plans, "the search was prepared"
    assert all(generic == 0 for generic, _ in plans)
