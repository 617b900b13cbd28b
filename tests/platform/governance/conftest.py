"""Fixtures for governance tests: the API personas, plus a chain and a tamperer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from governance.audit import Actor, append
from tenants.models import Tenant
from tests.db_roles import as_superuser

# The API personas (owner, outsider, agent) are the API test suite's fixtures.
from tests.platform.api.conftest import Persona, agent, outsider  # noqa: F401
from tests.platform.api.conftest import owner as owner

CHAIN_LENGTH = 10


def grow_chain(tenant: Tenant, upto: int = CHAIN_LENGTH) -> None:
    """Append probe events until the tenant's chain has ``upto`` events."""
    from governance.audit import chain_head

    head = chain_head(tenant.pk)
    for index in range((head or {}).get("sequence", 0), upto):
        append(
            tenant_id=tenant.pk,
            actor=Actor.system("tests"),
            action="probe.appended",
            target_type="probe",
            target_id=index + 1,
            changes={"index": index + 1, "note": f"event {index + 1}"},
        )


@contextmanager
def as_attacker() -> Iterator[Any]:
    """A superuser that switched triggers off: what full database access allows (the app's
    own role cannot; tests/db_roles.py)."""
    with as_superuser() as cursor:
        yield cursor


@pytest.fixture
def chain(owner: Persona) -> Tenant:
    grow_chain(owner.tenant)
    return owner.tenant
