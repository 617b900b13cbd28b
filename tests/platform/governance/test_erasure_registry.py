"""Each app erases its own data through the registry (tenants.erasers); governance only
orchestrates: a new app's eraser is called in its stage, inside the tenant's scope and the
erasure's transaction, and governance.erasure imports no other app's code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from governance.erasure import erase_end_user
from tenants.context import current_tenant_id
from tenants.erasers import (
    EraseFunction,
    ErasureSubject,
    Stage,
    erasers,
    register_eraser,
    unregister_eraser,
)
from tests.platform.api.conftest import ACTOR, make_persona

pytestmark = pytest.mark.django_db

ERASURE_MODULE = Path(__file__).parents[3] / "governance" / "erasure.py"
OTHER_APPS = ("agentflow", "hitl", "learning", "frontend")


@pytest.fixture
def calls() -> Iterator[list[tuple[str, ErasureSubject, int | None, bool]]]:
    seen: list[tuple[str, ErasureSubject, int | None, bool]] = []

    def eraser(stage: str) -> EraseFunction:
        def erase(subject: ErasureSubject) -> dict[str, int]:
            seen.append((stage, subject, current_tenant_id(), connection.in_atomic_block))
            return {f"newapp.{stage}": 1}

        return erase

    register_eraser("newapp.first", Stage.STOP, eraser("first"))
    register_eraser("newapp.copies", Stage.COPIES, eraser("copies"))
    yield seen
    unregister_eraser("newapp.first")
    unregister_eraser("newapp.copies")


def test_a_new_apps_eraser_is_called_in_scope_in_its_stage(
    calls: list[tuple[str, ErasureSubject, int | None, bool]],
) -> None:
    tenant = make_persona("Acme").tenant
    report = erase_end_user(actor=ACTOR, tenant=tenant, user_id="ada")
    assert [call[0] for call in calls] == ["first", "copies"]
    for _, subject, scoped_to, in_transaction in calls:
        assert (subject.tenant_id, subject.user_id, subject.actor) == (tenant.pk, "ada", ACTOR)
        assert scoped_to == tenant.pk
        assert in_transaction
    assert report.erased["newapp.first"] == report.erased["newapp.copies"] == 1
    keys = list(report.erased)
    # Stops first, copies while the runs still name the user, the conversations last.
    assert keys.index("newapp.first") < keys.index("review_requests") < keys.index("runs")
    assert keys.index("newapp.copies") < keys.index("runs")


def test_every_app_registers_its_own_eraser() -> None:
    stages = {eraser.name: eraser.stage for eraser in erasers()}
    assert stages == {
        "agentflow.cancel_runs": Stage.STOP,
        "hitl": Stage.COPIES,
        "learning": Stage.COPIES,
        "agentflow": Stage.OWNER,
        "tenants.idempotency": Stage.OWNER,
    }


def test_governance_erasure_imports_no_other_apps_code() -> None:
    tree = ast.parse(ERASURE_MODULE.read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    foreign = sorted(name for name in imported if name.split(".")[0] in OTHER_APPS)
    assert foreign == [], f"governance.erasure imports {foreign}: let that app register an eraser"
    models = sorted(name for name in imported if name.endswith(".models"))
    assert models in ([], ["tenants.models"]), models  # Tenant, for the signature only
