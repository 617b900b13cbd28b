"""Nearest-neighbour search over any model with a pgvector `embedding`, per tenant.

`nearest(rows, vector, ...)` ranks an already-filtered queryset (tenant scope plus e.g. an
agent and an `is_active` filter) by cosine similarity. Knowledge chunks and golden paths
both search through it.

Why a planner: pgvector 0.6's HNSW index applies a WHERE filter only *after* it returned
`hnsw.ef_search` candidates of the whole table (all tenants), so a filtered HNSW query
silently returns fewer and worse rows (FINDINGS.md: recall@5 0.67 with 10 tenants at the
default ef_search=40). So:

* a scope of at most `exact_max_rows` rows (`EXACT_SEARCH_MAX_ROWS`, 5,000) is searched
  exactly over the rows its B-tree index finds: recall 1.0, ~8 ms at 5,000 rows, but
  p95 25 ms at 9,400 and 500 ms at 95,000 rows (bench/golden_paths.py);
* a larger scope uses an HNSW index: with iterative scans where the server has them
  (pgvector >= 0.8), otherwise with `ef_search` raised in proportion to how small a share
  of the index the scope is, so that about `_HITS_PER_WANTED_ROW` (4) times `limit` of the
  scope's rows are expected among the candidates: ef_search 211 for a tenant holding 9.5%
  of a 1M-row table. If that would need more than `_MAX_EF_SEARCH`, exact search.
* the index is the tenant's own partial HNSW index (`WHERE tenant_id = <id>`) when it has
  one: `ensure_tenant_indexes` builds them for tenants of `TENANT_INDEX_MIN_ROWS` rows or
  more. The scoped query's `tenant_id = <id>`, planned with its value (a custom plan, even
  for a prepared statement), lets PostgreSQL pick it, every candidate
  is then the tenant's, and ef_search stays near its floor of 40. Why: at 1M rows and 10
  tenants (2 busy cores) the shared index needs ef_search ~200 for recall@5 0.97 and then
  misses a 20 ms p95 (22 ms; 33 ms at ef_search 400); see docs/operations.md for the
  figures with tenant indexes. Their cost: one more index per large tenant (about as
  large as its share of the shared one) and its build time.

The scope's full size (for its share) is counted at most once in ten minutes per scope and
process: a bounded count only tells "more than exact_max_rows".

Settings are made with SET LOCAL inside a transaction, so they can never outlive the query
on a pooled connection.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, QuerySet, Value
from pgvector.django import CosineDistance

from agentflow.kernel.vectors import Vector
from tenants.context import current_tenant_id

__all__ = [
    "EXACT_SEARCH_MAX_ROWS",
    "TENANT_INDEX_MIN_ROWS",
    "count_rows",
    "create_tenant_index",
    "ensure_tenant_indexes",
    "exact_statement",
    "nearest",
    "nearest_exact",
    "vector_literal",
]

# Exact search's p95 grows with the scope: 25 ms at 9,400 rows on 2 busy cores
# (bench/golden_paths.py), while HNSW at ef_search 200 answered in 10 ms. Above 5,000 rows
# the index is the faster plan whenever ef_search stays within _MAX_EF_SEARCH.
EXACT_SEARCH_MAX_ROWS = 5_000
# A tenant with this many rows gets its own partial HNSW index (`ensure_tenant_indexes`):
# its searches then need no over-fetching for the other tenants' rows.
TENANT_INDEX_MIN_ROWS = 50_000
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 64
# Filtered HNSW keeps the scope's rows among ef_search candidates of the whole index. With
# realistic vectors, 10 tenants and 1M rows (bench/golden_paths.py) recall@5 was 0.936 at
# ~2 expected scope rows among the candidates per wanted row, 0.974 at ~4 and 0.990 at ~8;
# p95 latency roughly doubles with each doubling. Sized for 4. pgvector caps ef_search at
# 1000: beyond, search exactly.
_HITS_PER_WANTED_ROW = 4
_MAX_EF_SEARCH = 1_000
_INDEX_CACHE_SECONDS = 60.0
_tenant_index_cache: dict[str, tuple[float, dict[int, int]]] = {}
_PREDICATE = re.compile(r"^\(*tenant_id = (\d+)\)*$")
# Scope sizes, cached per query (its SQL, tenant included) and process for a while, so a
# search does not pay for a count every time. The bounded count only says "more than
# exact_max_rows"; on pgvector < 0.8 the share of the table decides ef_search, so a larger
# scope is counted in full. A stale size can only pick another plan for a while, never
# change which rows may be found: every filter stays in the query. A full count of a 95k-row
# scope takes 20-35 ms: ten minutes keep it out of the search's tail latency.
_SCOPE_SIZE_TTL_SECONDS = 600.0
_SCOPE_SIZE_CACHE_MAX = 4096
_scope_sizes: dict[tuple[Any, ...], tuple[float, int]] = {}
_SIMILARITY = "similarity"
_DISTANCE = "_vector_search_distance"


@dataclass(frozen=True, slots=True)
class _Plan:
    exact: bool
    ef_search: int | None = None
    iterative: bool = False


@functools.cache
def _pgvector_version() -> tuple[int, ...]:
    """The server's pgvector version (asked once per process: servers are not upgraded live)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return tuple(int(part) for part in re.findall(r"\d+", row[0])[:3]) if row else (0,)


def _table_rows(model: type[models.Model]) -> int | None:
    """The planner's estimate of the model's table size (all tenants), None if unknown.

    reltuples is -1 for a table never vacuumed or analyzed (PostgreSQL >= 14).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def _tenant_indexes(model: type[models.Model]) -> dict[int, int]:
    """Tenant id -> rows of its valid partial HNSW index on the model's table (cached)."""
    table = model._meta.db_table
    now = time.monotonic()
    cached = _tenant_index_cache.get(table)
    if cached is not None and now - cached[0] <= _INDEX_CACHE_SECONDS:
        return cached[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(i.indpred, i.indrelid), c.reltuples::bigint FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = %s::regclass AND i.indpred IS NOT NULL AND i.indisvalid "
            "AND am.amname = 'hnsw'",
            [table],
        )
        found = {}
        for predicate, rows in cursor.fetchall():
            match = _PREDICATE.match(predicate or "")
            if match:
                found[int(match.group(1))] = int(rows)
    _tenant_index_cache[table] = (now, found)
    return found


def _plan(
    model: type[models.Model],
    scope_rows: int,
    limit: int,
    exact_max_rows: int,
    tenant_id: int | None = None,
) -> _Plan:
    if scope_rows <= exact_max_rows:
        return _Plan(exact=True)
    if _pgvector_version() >= (0, 8):
        return _Plan(exact=False, ef_search=max(40, 2 * limit), iterative=True)
    # With the tenant's own partial index (PostgreSQL picks it: the scoped query says
    # `tenant_id = <literal>`), candidates come from the tenant's rows only.
    index_rows = _tenant_indexes(model).get(tenant_id) if tenant_id is not None else None
    table_rows = index_rows if index_rows and index_rows > 0 else _table_rows(model)
    if not table_rows:
        return _Plan(exact=True)
    share = min(1.0, scope_rows / table_rows)
    ef_search = max(40, math.ceil(_HITS_PER_WANTED_ROW * limit / share))
    if ef_search > _MAX_EF_SEARCH:
        return _Plan(exact=True)
    return _Plan(exact=False, ef_search=ef_search)


def count_rows(rows: QuerySet[Any], cap: int) -> int:
    """How many rows the queryset holds, counted up to `cap` only (a bounded scan)."""
    return rows[:cap].count()


def _scope_size(rows: QuerySet[Any], exact_max_rows: int, known: int | None) -> int:
    """The scope's size as the plan needs it: bounded when small, in full when large."""
    statement, params = rows.order_by().values("pk").query.sql_with_params()
    key = (rows.db, exact_max_rows, known is None, statement, tuple(map(str, params)))
    now = time.monotonic()
    cached = _scope_sizes.get(key)
    if cached is not None and now - cached[0] <= _SCOPE_SIZE_TTL_SECONDS:
        return cached[1]
    size = count_rows(rows, exact_max_rows + 1) if known is None else known
    if size > exact_max_rows and _pgvector_version() < (0, 8):
        size = max(size, rows.order_by().count())
    if len(_scope_sizes) >= _SCOPE_SIZE_CACHE_MAX:
        _scope_sizes.clear()  # many scopes: start over rather than track ages
    _scope_sizes[key] = (now, size)
    return size


@contextmanager
def _local_settings(values: Mapping[str, str], *, restore: bool) -> Iterator[None]:
    """Index-scan settings for the queries of the block; call inside `transaction.atomic()`.

    set_config(..., true) is SET LOCAL: it ends with the transaction, so a pooled
    connection never carries it into another query. Inside a caller's transaction it would
    last until that one ends, hence `restore` there; in a transaction of our own one
    statement sets everything (each round trip showed in the p95). The hnsw settings are read
    when the index is scanned and plan_cache_mode when the next statement is bound, so both
    apply to a prepared statement too.
    """
    with connection.cursor() as cursor:
        if not restore:
            calls = ", ".join("set_config(%s, %s, true)" for _ in values)
            cursor.execute(f"SELECT {calls}", [part for item in values.items() for part in item])
            yield
            return
        previous = {}
        for name, value in values.items():
            cursor.execute("SELECT current_setting(%s, true), set_config(%s, %s, true)",
                           [name, name, value])  # fmt: skip
            previous[name] = cursor.fetchone()[0]
        yield
        for name, value in previous.items():
            if value is not None:
                cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def _best(found: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    rows = []
    for row in found:
        # Cosine similarity within [0, 1]: unrelated or opposite rows are no match at all.
        similarity = min(1.0, float(row[_SIMILARITY]))
        if similarity > 0.0:
            rows.append({**row, _SIMILARITY: similarity})
    rows.sort(key=lambda row: row[_SIMILARITY], reverse=True)
    return rows[:limit]


def vector_literal(vector: Vector) -> str:
    """pgvector's text form of ``vector`` as the float32 a column stores: 9 significant
    digits, which read back to the same float32 (pgvector parses with strtof), in a quarter
    of the time of pgvector's own ``str()`` of each value and two thirds of its length."""
    values = np.asarray(vector, dtype=np.float32).tolist()
    return "[" + ("%.9g," * len(values))[:-1] % tuple(values) + "]"


def nearest(
    rows: QuerySet[Any],
    vector: Vector,
    *,
    limit: int,
    fields: Sequence[str],
    scope_rows: int | None = None,
    exact_max_rows: int = EXACT_SEARCH_MAX_ROWS,
    embedding_field: str = "embedding",
) -> list[dict[str, Any]]:
    """The `limit` rows of `rows` most similar to `vector`, best first (sync ORM).

    `rows` is already filtered (tenant scope, agent, active...): every filter is in the
    query itself, whichever plan is used. Each result holds `fields` plus "similarity"
    (cosine similarity, at most 1; rows at 0 or below are dropped). `scope_rows` (the
    filtered row count, possibly cached) only chooses the plan; when not given it is
    counted up to `exact_max_rows + 1` (and in full above that on pgvector < 0.8), at most
    once in ten minutes per scope and process.
    """
    if limit <= 0 or not np.any(vector):
        return []  # a zero vector (failed embedding) is similar to nothing
    if scope_rows is None or (scope_rows > exact_max_rows and _pgvector_version() < (0, 8)):
        # Ours or the caller's bounded count would understate a large scope's share.
        scope_rows = _scope_size(rows, exact_max_rows, scope_rows)
    plan = _plan(rows.model, scope_rows, limit, exact_max_rows, current_tenant_id())
    wanted = (*fields, _SIMILARITY)
    query = Value(vector_literal(vector))
    if plan.exact:
        # Ordered by similarity (1 - distance), not by the distance operator itself: the
        # HNSW index can only serve `ORDER BY embedding <=> q`, so the planner cannot pick
        # it here and must rank the B-tree-filtered rows exactly.
        exact = rows.annotate(
            **{_SIMILARITY: Value(1.0) - CosineDistance(embedding_field, query)}
        ).order_by(f"-{_SIMILARITY}")
        return _best(list(exact.values(*wanted)[:limit]), limit)
    by_index = (
        rows.annotate(**{_DISTANCE: CosineDistance(embedding_field, query)})
        .annotate(**{_SIMILARITY: Value(1.0) - F(_DISTANCE)})
        .order_by(_DISTANCE)
    )
    # A prepared statement (DB_PREPARE_THRESHOLD) may switch to a generic plan, which
    # cannot know the tenant literal, so the tenant's partial index could not serve it.
    overrides = {"hnsw.ef_search": str(plan.ef_search), "plan_cache_mode": "force_custom_plan"}
    if plan.iterative:
        overrides["hnsw.iterative_scan"] = "strict_order"
    own_transaction = not connection.in_atomic_block
    with transaction.atomic(), _local_settings(overrides, restore=not own_transaction):
        found = list(by_index.values(*wanted)[:limit])
    return _best(found, limit)


def exact_statement(*, select: str, source: str, where: str, embedding: str) -> str:
    """A constant statement ranking `source`'s rows that match `where` exactly by cosine
    similarity to its first parameter (the vector), for `nearest_exact`.

    `select` lists the result's columns; the similarity follows them. Its parameters, in
    order: the vector, those of `where`, the limit. Ordered by the similarity, not by the
    distance operator, for the reason `nearest` gives: the planner must not pick the HNSW
    index.
    """
    return (
        f"SELECT {select}, 1.0 - ({embedding} <=> %s::vector) AS {_SIMILARITY} "  # noqa: S608
        f"FROM {source} WHERE {where} ORDER BY {_SIMILARITY} DESC LIMIT %s"
    )


def nearest_exact(
    statement: str,
    where_params: Sequence[Any],
    vector: Vector,
    *,
    columns: Sequence[str],
    limit: int,
) -> list[dict[str, Any]]:
    """`nearest`'s exact plan as one constant statement from `exact_statement` (sync).

    For a run's searches of a scope known to be small (at most EXACT_SEARCH_MAX_ROWS rows):
    building and compiling the queryset cost five times the query itself (0.77 against
    0.12 ms of CPU per search, issue 15). The caller's `where` carries every filter,
    the tenant's first (`tenant_id = %s` from `require_tenant_id()`, as the scoped manager
    would add it). Results as `nearest`'s: `columns` plus "similarity", best first.
    """
    if limit <= 0 or not np.any(vector):
        return []
    with connection.cursor() as cursor:
        cursor.execute(statement, [vector_literal(vector), *where_params, limit])
        names = (*columns, _SIMILARITY)
        found = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return _best(found, limit)


def create_tenant_index(
    model: type[models.Model],
    tenant_id: int,
    *,
    embedding_field: str = "embedding",
    concurrently: bool = True,
    maintenance_work_mem: str = "1GB",
) -> str:
    """Build the tenant's partial HNSW index (cosine, m=16, ef_construction=64) if missing.

    Concurrently by default (writes go on meanwhile; must run outside a transaction).
    About 1 minute and 200 MB per 100k rows of 384 dimensions on 2 cores.
    """
    table = model._meta.db_table
    column = model._meta.get_field(embedding_field).column  # type: ignore[union-attr]
    name = f"{table[:40]}_hnsw_t{int(tenant_id)}"
    with connection.cursor() as cursor:
        # A failed concurrent build leaves an invalid index that IF NOT EXISTS would keep.
        cursor.execute(
            "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) AND NOT indisvalid",
            [name],
        )
        if cursor.fetchone():
            cursor.execute(f'DROP INDEX {"CONCURRENTLY " if concurrently else ""}"{name}"')
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                       [maintenance_work_mem])  # fmt: skip
        try:
            cursor.execute(
                f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
                f'"{name}" ON "{table}" USING hnsw ("{column}" vector_cosine_ops) '
                f"WITH (m = {_HNSW_M}, ef_construction = {_HNSW_EF_CONSTRUCTION}) "
                f"WHERE tenant_id = {int(tenant_id)}"
            )
        finally:
            # In an aborted transaction this fails too: the build's own error is the one.
            with contextlib.suppress(DatabaseError):
                cursor.execute("RESET maintenance_work_mem")
    _tenant_index_cache.pop(table, None)
    return name


def ensure_tenant_indexes(
    model: type[models.Model],
    *,
    min_rows: int = TENANT_INDEX_MIN_ROWS,
    concurrently: bool = True,
    maintenance_work_mem: str = "1GB",
) -> list[str]:
    """Give every tenant with at least `min_rows` rows its partial HNSW index.

    Platform maintenance across tenants (a periodic task or an operator's command), so it
    reads the table without a tenant scope. Returns the names of the indexes built.
    """
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT tenant_id FROM "{table}" GROUP BY tenant_id HAVING count(*) >= %s',  # noqa: S608
            [min_rows],
        )
        large = [int(row[0]) for row in cursor.fetchall()]
    _tenant_index_cache.pop(table, None)
    indexed = _tenant_indexes(model)
    return [
        create_tenant_index(
            model, tenant_id, concurrently=concurrently, maintenance_work_mem=maintenance_work_mem
        )
        for tenant_id in large
        if tenant_id not in indexed
    ]
