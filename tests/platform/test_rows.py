"""unique_or_none: one row by a unique key, without the ORDER BY that .first() adds."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agentflow.core.rows import unique_or_none
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_the_row_of_a_unique_key_or_none_with_no_order_by() -> None:
    tenant = Tenant.objects.create(name="Rows", slug=f"rows-{uuid.uuid4().hex[:8]}")
    with CaptureQueriesContext(connection) as queries:
        found = unique_or_none(Tenant.objects.filter(pk=tenant.pk))
        missing = unique_or_none(Tenant.objects.filter(pk=tenant.pk + 10_000))
    assert found == tenant
    assert missing is None
    assert len(queries) == 2
    assert all("ORDER BY" not in q["sql"] for q in queries.captured_queries), queries
