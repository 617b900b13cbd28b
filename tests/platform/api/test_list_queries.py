"""Lists are serialized from the rows of one page: no query per row (issue 14, item 4)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.platform.api.conftest import Persona


def _queries(owner: Persona, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = owner.get(path)
    assert response.status_code == 200, response.content
    return len(queries.captured_queries)


def _start_runs(owner: Persona, agent: Any, count: int) -> None:
    for i in range(count):
        created = owner.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": f"q{i}", "message": "hello"},
            headers={"Prefer": "respond-async"},
        )
        assert created.status_code == 202, created.content


def test_the_runs_lists_cost_the_same_queries_for_one_row_or_many(
    owner: Persona, agent: Any
) -> None:
    paths = ("/api/v1/runs", f"/api/v1/agents/{agent.pk}/runs")
    _start_runs(owner, agent, 1)
    one = [_queries(owner, path) for path in paths]
    _start_runs(owner, agent, 4)
    many = [_queries(owner, path) for path in paths]
    assert owner.get("/api/v1/runs").json()["total"] == 5
    assert many == one
