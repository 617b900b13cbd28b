"""One door into tenant scope, one platform admin, one role table (issue 14, item 3).

``tenant_scope`` is the only way in: the API base view enters it, every task that takes a
``tenant_id`` enters it through ``@scoped_to_tenant``, the live socket reads agents inside
it. API, dashboard and socket agree on who is a platform admin and on what each role may do.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agentflow.server.celery import app as celery_app
from frontend.access import MANAGERS, PAGE_ROLES, REVIEWERS
from frontend.consumers import _watched_tenants
from governance.services import ROLE_CEILING, ROLE_HIERARCHY
from hitl.policy import ROLE_RANK
from tenants import views_base
from tenants.context import tenant_scope
from tenants.models import Role
from tenants.roles import PLATFORM_ADMIN, ROLES, is_platform_admin
from tenants.scoping import TenantScopeMissing
from tests.platform.api.conftest import make_agent, make_persona

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).parents[3]
PROJECT_APPS = ("agentflow", "tenants", "hitl", "governance", "learning", "frontend")
TASK_MODULES = ("agentflow.tasks", "hitl.tasks", "learning.tasks", "governance.tasks")


def _project_tasks() -> dict[str, Any]:
    for module in TASK_MODULES:
        __import__(module)
    return {
        name: task
        for name, task in celery_app.tasks.items()
        if getattr(task, "__module__", "").split(".")[0] in PROJECT_APPS
    }


def test_every_task_that_takes_a_tenant_enters_its_scope_through_the_decorator() -> None:
    tenant_tasks = {
        name: task
        for name, task in _project_tasks().items()
        if "tenant_id" in inspect.signature(task.run).parameters
    }
    assert "hitl.notify_email" in tenant_tasks  # the sweep found the tasks
    undecorated = sorted(
        name for name, task in tenant_tasks.items() if not getattr(task.run, "scoped_to_tenant", 0)
    )
    assert undecorated == [], f"use @scoped_to_tenant on {undecorated}"


def test_a_task_run_outside_the_decorator_cannot_read_tenant_rows() -> None:
    from hitl.tasks import notify_email_task

    tenant = make_persona("Acme").tenant
    missing = "00000000-0000-0000-0000-000000000000"
    body = inspect.unwrap(notify_email_task.run)
    with pytest.raises(TenantScopeMissing):
        body(tenant.pk, missing, "assigned", role=Role.REVIEWER)
    # Through the decorator, the same call reads the tenant's rows (and finds none).
    assert notify_email_task.run(tenant.pk, missing, "assigned", role=Role.REVIEWER) == "missing"


def test_the_api_base_view_enters_the_scope_through_tenant_scope() -> None:
    owner = make_persona("Acme")
    with mock.patch.object(views_base, "tenant_scope", wraps=tenant_scope) as door:
        assert owner.get("/api/v1/agents").status_code == 200
    door.assert_called_once_with(owner.tenant.pk)


def test_only_the_context_module_touches_the_context_variable() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for app in PROJECT_APPS
        for path in (ROOT / app).rglob("*.py")
        if "_current_tenant_id" in path.read_text() and path != ROOT / "tenants" / "context.py"
    ]
    assert offenders == []


def _staff(name: str = "staff") -> Any:
    return get_user_model().objects.create_user(name, is_staff=True)


def test_a_staff_non_superuser_gets_the_same_answer_from_api_dashboard_and_socket() -> None:
    owner = make_persona("Acme")
    agent = make_agent(owner)
    staff = _staff()
    client = Client()
    client.force_login(staff)
    api = client.get("/api/v1/agents", headers={"X-Tenant": owner.tenant.slug})
    assert api.status_code == 200
    assert [row["id"] for row in api.json()["results"]] == [str(agent.pk)]
    page = client.get("/agents/")
    assert page.status_code == 200
    assert str(agent.pk) in page.content.decode()
    watched = _watched_tenants.func(staff, str(owner.tenant.pk))  # type: ignore[attr-defined]
    assert watched == {owner.tenant.pk: None}


def test_platform_admin_is_one_definition() -> None:
    users = get_user_model().objects
    assert is_platform_admin(_staff())
    assert is_platform_admin(users.create_superuser("root", "", "pw-root-123!"))
    assert not is_platform_admin(users.create_user("plain"))
    assert not is_platform_admin(None)


def test_every_role_table_is_a_view_of_the_one() -> None:
    every = frozenset(ROLES)
    assert {role: ROLES[role].scopes for role in Role.values} == views_base.ROLE_SCOPES
    assert ROLES[Role.OWNER].scopes == views_base.PLATFORM_ADMIN_SCOPES
    assert ROLE_RANK == {Role.REVIEWER: 1, Role.OPERATOR: 2, Role.OWNER: 3}
    assert list(ROLE_RANK) == [Role.REVIEWER, Role.OPERATOR, Role.OWNER]
    assert ROLE_HIERARCHY == (Role.VIEWER, Role.REVIEWER, Role.OPERATOR, Role.OWNER, PLATFORM_ADMIN)
    assert ROLE_CEILING[Role.OPERATOR] == "execute"
    assert {Role.OWNER, Role.OPERATOR, PLATFORM_ADMIN} == MANAGERS
    assert every - {Role.VIEWER} == REVIEWERS
    # Pages follow the API's scopes (issue 19): agents and the audit trail are `read`.
    assert PAGE_ROLES["agents"] == PAGE_ROLES["audit"] == every
    assert PAGE_ROLES["hitl"] == PAGE_ROLES["runs"] == every
    assert PAGE_ROLES["tenants"] == MANAGERS
