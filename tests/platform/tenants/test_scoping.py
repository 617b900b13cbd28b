"""The tenant scoping mechanism fails closed and never mixes tenants."""

from __future__ import annotations

import pytest

from agentflow.models import Agent
from tenants.context import current_tenant_id, dangerously_no_tenant_scope, tenant_scope
from tenants.models import Tenant
from tenants.scoping import TenantMismatch, TenantScopeMissing, scoped_to_tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants() -> tuple[Tenant, Tenant]:
    return (
        Tenant.objects.create(name="Acme", slug="acme"),
        Tenant.objects.create(name="Globex", slug="globex"),
    )


def test_query_outside_a_scope_raises(two_tenants: tuple[Tenant, Tenant]) -> None:
    with pytest.raises(TenantScopeMissing):
        list(Agent.objects.all())


def test_each_scope_sees_only_its_rows(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = two_tenants
    with tenant_scope(acme.pk):
        Agent.objects.create(name="bot", blueprint="support_agent")
    with tenant_scope(globex.pk):
        Agent.objects.create(name="bot", blueprint="support_agent")
        assert Agent.objects.count() == 1
        assert Agent.objects.get().tenant_id == globex.pk
    assert Agent.unscoped.count() == 2


def test_writing_a_foreign_row_inside_a_scope_raises(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = two_tenants
    with tenant_scope(acme.pk), pytest.raises(TenantMismatch):
        Agent(tenant_id=globex.pk, name="x", blueprint="support_agent").save()
    assert Agent.unscoped.count() == 0


def test_scopes_nest_and_restore(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = two_tenants
    with tenant_scope(acme.pk):
        with tenant_scope(globex.pk):
            assert current_tenant_id() == globex.pk
        assert current_tenant_id() == acme.pk
        with dangerously_no_tenant_scope():
            assert current_tenant_id() is None
        assert current_tenant_id() == acme.pk
    assert current_tenant_id() is None


@pytest.mark.parametrize("bad", ["1", 1.0, None, True])
def test_scope_rejects_non_integer_ids(bad: object) -> None:
    with pytest.raises(TypeError), tenant_scope(bad):  # type: ignore[arg-type]
        pass


def test_task_decorator_enters_the_scope(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, _ = two_tenants

    @scoped_to_tenant
    def task(tenant_id: int) -> int | None:
        return current_tenant_id()

    assert task(acme.pk) == acme.pk
    assert current_tenant_id() is None


def test_bulk_create_stamps_and_checks_the_tenant(two_tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = two_tenants
    with tenant_scope(acme.pk):
        Agent.objects.bulk_create([Agent(name="a", blueprint="support_agent")])
        with pytest.raises(TenantMismatch):
            Agent.objects.bulk_create([Agent(tenant_id=globex.pk, name="b", blueprint="x")])
    assert list(Agent.unscoped.values_list("tenant_id", flat=True)) == [acme.pk]


def test_scoped_manager_filters_exactly_like_filter_by_tenant(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    """The scope's WHERE, added in place, is the SQL of ``.filter(tenant_id=...)``: the same
    statement alone, chained with joins and excludes, and in an OR of two querysets."""
    acme, globex = two_tenants
    with tenant_scope(acme.pk):
        Agent.objects.create(name="bot", blueprint="support_agent")
    with tenant_scope(globex.pk):
        Agent.objects.create(name="other", blueprint="support_agent")
        shapes = [
            lambda rows: rows,
            lambda rows: rows.filter(name="bot").exclude(blueprint="x").select_related("tenant"),
            lambda rows: rows.filter(tenant__slug="acme").order_by("-created_at")[:3],
            lambda rows: rows.filter(name="bot") | rows.filter(name="other"),
        ]
        for shape in shapes:
            by_filter = shape(Agent.unscoped.filter(tenant_id=globex.pk))
            assert str(shape(Agent.objects.all()).query) == str(by_filter.query)
        assert list(Agent.objects.values_list("name", flat=True)) == ["other"]
        assert Agent.objects.filter(name="bot").count() == 0
        assert Agent.objects.update(name="renamed") == 1
    assert Agent.unscoped.get(tenant=acme).name == "bot"
