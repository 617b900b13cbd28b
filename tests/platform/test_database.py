"""The embedded PostgreSQL is real: ORM round trips and pgvector cosine search."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, models
from pgvector.django import CosineDistance, VectorField


class Probe(models.Model):
    """A table created only for these tests (not part of the schema)."""

    name = models.CharField(max_length=50)
    embedding = VectorField(dimensions=3)

    class Meta:
        app_label = "agentflow"
        managed = False

    def __str__(self) -> str:
        return self.name


@pytest.fixture
def probe_table(db: None) -> Iterator[type[Probe]]:
    with connection.schema_editor() as editor:
        editor.create_model(Probe)
    yield Probe
    with connection.schema_editor() as editor:
        editor.delete_model(Probe)


def test_server_is_postgres_16_with_pgvector(db: None) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        (version,) = cursor.fetchone()
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (vector_version,) = cursor.fetchone()
    assert int(version) >= 150000
    assert tuple(int(p) for p in vector_version.split(".")[:2]) >= (0, 6)


def test_model_round_trip(probe_table: type[Probe]) -> None:
    created = probe_table.objects.create(name="alpha", embedding=[1.0, 0.0, 0.0])
    fetched = probe_table.objects.get(pk=created.pk)
    assert fetched.name == "alpha"
    assert list(fetched.embedding) == [1.0, 0.0, 0.0]


def test_cosine_search_returns_the_nearest_row(probe_table: type[Probe]) -> None:
    probe_table.objects.bulk_create(
        [
            Probe(name="east", embedding=[1.0, 0.0, 0.0]),
            Probe(name="north", embedding=[0.0, 1.0, 0.0]),
            Probe(name="up", embedding=[0.0, 0.0, 1.0]),
        ]
    )
    query = [0.1, 0.9, 0.05]  # closest in angle to "north", though not equal to it
    ranked = list(
        probe_table.objects.annotate(distance=CosineDistance("embedding", query))
        .order_by("distance")
        .values_list("name", flat=True)
    )
    assert ranked[0] == "north"
    assert ranked[-1] != "north"
