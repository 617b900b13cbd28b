"""Nearest-neighbour search over any model with a pgvector `embedding`, per tenant.

`nearest(rows, vector, ...)` ranks an already-filtered queryset (tenant scope plus e.g. an
agent and an `is_active` filter) by cosine similarity. Knowledge chunks and golden paths
both search through it.

Why a planner: pgvector 0.6's HNSW index applies a WHERE filter only *after* it returned
`hnsw.ef_search` candidates of the whole table (all tenants), so a filtered HNSW query
silently returns fewer and worse rows (FINDINGS.md: recall@5 0.67 with 10 tenants at the
default ef_search=40). So:

* a scope of at most `exact_max_rows` rows (`EXACT_SEARCH_MAX_ROWS`) is searched exactly
  over the rows its B-tree index finds: recall 1.0, about 20 ms at 10,000 rows;
* a larger scope uses the HNSW index: with iterative scans where the server has them
  (pgvector >= 0.8), otherwise with `ef_search` raised in proportion to how small a share
  of the table (pg_class.reltuples of `rows.model`) the scope is, so that about
  `_HITS_PER_WANTED_ROW` times `limit` candidates of the scope are expected among those the
  index returns. If that would need more than `_MAX_EF_SEARCH`, the exact search is used.

Settings are made with SET LOCAL inside a transaction, so they can never outlive the query
on a pooled connection.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, models, transaction
from django.db.models import F, QuerySet, Value
from pgvector.django import CosineDistance

from agentflow.kernel.vectors import Vector

__all__ = ["EXACT_SEARCH_MAX_ROWS", "count_rows", "nearest"]

EXACT_SEARCH_MAX_ROWS = 10_000
# Filtered HNSW keeps the scope's rows among ef_search candidates of the whole table; with
# 10 tenants FINDINGS.md measured recall@5 0.92 at 2 expected hits per wanted row and 0.99
# at 8, so ef_search is sized for 8. pgvector caps ef_search at 1000: beyond, search exactly.
_HITS_PER_WANTED_ROW = 8
_MAX_EF_SEARCH = 1_000
# Scope sizes, cached per query (its SQL, tenant included) and process for a while, so a
# search does not pay for a count every time. The bounded count only says "more than
# exact_max_rows"; on pgvector < 0.8 the share of the table decides ef_search, so a larger
# scope is counted in full. A stale size can only pick another plan for a while, never
# change which rows may be found: every filter stays in the query.
_SCOPE_SIZE_TTL_SECONDS = 60.0
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


def _plan(model: type[models.Model], scope_rows: int, limit: int, exact_max_rows: int) -> _Plan:
    if scope_rows <= exact_max_rows:
        return _Plan(exact=True)
    if _pgvector_version() >= (0, 8):
        return _Plan(exact=False, ef_search=max(40, 2 * limit), iterative=True)
    table_rows = _table_rows(model)
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
def _local_settings(values: Mapping[str, str]) -> Iterator[None]:
    """Index-scan settings for the queries of the block; call inside `transaction.atomic()`.

    set_config(..., true) is SET LOCAL: it ends with the transaction, so a pooled
    connection never carries it into another query. Inside a caller's transaction it would
    last until that one ends, hence the restore. These settings are read when the index is
    scanned, not when a plan is made, so a prepared statement's cached plan is no issue.
    """
    with connection.cursor() as cursor:
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
    once a minute per scope.
    """
    if limit <= 0 or not np.any(vector):
        return []  # a zero vector (failed embedding) is similar to nothing
    if scope_rows is None or (scope_rows > exact_max_rows and _pgvector_version() < (0, 8)):
        # Ours or the caller's bounded count would understate a large scope's share.
        scope_rows = _scope_size(rows, exact_max_rows, scope_rows)
    plan = _plan(rows.model, scope_rows, limit, exact_max_rows)
    wanted = (*fields, _SIMILARITY)
    if plan.exact:
        # Ordered by similarity (1 - distance), not by the distance operator itself: the
        # HNSW index can only serve `ORDER BY embedding <=> q`, so the planner cannot pick
        # it here and must rank the B-tree-filtered rows exactly.
        exact = rows.annotate(
            **{_SIMILARITY: Value(1.0) - CosineDistance(embedding_field, vector)}
        ).order_by(f"-{_SIMILARITY}")
        return _best(list(exact.values(*wanted)[:limit]), limit)
    by_index = (
        rows.annotate(**{_DISTANCE: CosineDistance(embedding_field, vector)})
        .annotate(**{_SIMILARITY: Value(1.0) - F(_DISTANCE)})
        .order_by(_DISTANCE)
    )
    overrides = {"hnsw.ef_search": str(plan.ef_search)}
    if plan.iterative:
        overrides["hnsw.iterative_scan"] = "strict_order"
    with transaction.atomic(), _local_settings(overrides):
        found = list(by_index.values(*wanted)[:limit])
    return _best(found, limit)
