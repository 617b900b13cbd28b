"""The tenant API against its own OpenAPI schema, with schemathesis (SPEC 5).

The schema is fetched live from ``/api/schema/`` and every tenant operation (everything
under /api/v1/ except the platform-admin ``/api/v1/tenants...``) is fuzzed in-process
through the WSGI app with the owner's API key: positive and negative cases, once with
generated path ids (mostly unknown: 404s) and once with the owner's real agent, run,
session and document ids (so the handlers run end to end). Checks: no 5xx, the status
code is documented, and content type, headers and body match the documented response.

Bounded: ``MAX_EXAMPLES`` per operation, mode and id set (more for writes on the real
objects), derandomised (the same cases
every run, so a failure reproduces), and a pytest timeout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agentflow.models import Agent, KnowledgeDocument, Run
from governance.invitations import invite_member
from hitl.services import request_review
from tenants import services
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.learning.world import owner_integrations

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 10
# Writes on the owner's real objects reach the deepest code (and the database): more cases.
MAX_EXAMPLES_REAL_WRITES = 25
WRITE_METHODS = ("POST", "PATCH", "PUT")
# Not tenant operations under an API key: platform admin's tenants, and accepting an
# invitation (a signed-in person joining a tenant; keys are refused with 403 by design,
# tested in tests/platform/governance/test_invitations.py).
PLATFORM_OPERATIONS = r"^/api/v1/tenants|^/api/v1/governance/invitations/accept$"
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@contextmanager
def in_test_transaction() -> Iterator[None]:
    """Keep Django's WSGI handler from closing the test's connection between requests
    (what django.test.Client does for its own requests)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def tenant_operations() -> list[Any]:
    """The live schema's tenant operations; DELETEs last so the real ids live long."""
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    operations = []
    for result in loaded.exclude(path_regex=PLATFORM_OPERATIONS).get_all_operations():
        if not isinstance(result, Ok):
            raise AssertionError(f"schemathesis cannot read an operation: {result.err()}")
        operations.append(result.ok())
    return sorted(operations, key=lambda op: (op.method.upper() == "DELETE", op.label))


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)

    def record(self, label: str, case: Any, response: Any) -> None:
        self.cases[label] += 1
        self.statuses[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = f"{label} -> {response.status_code}: [{failure.code}] {failure.title}"
                detail = f"{failure.message}\n  {response.text[:300]}\n  {case.as_curl_command()}"
                self.failures.setdefault(key, detail[:1500])

    def report(self) -> str:
        lines = [f"{sum(self.cases.values())} schemathesis cases over {len(self.cases)} operations"]
        lines += [
            f"  {label} {status}: {n}" for (label, status), n in sorted(self.statuses.items())
        ]
        return "\n".join(lines)


@pytest.fixture
def contract_ids(owner: Persona, agent: Agent, settings: Any) -> dict[str, str]:
    """The owner's real ids; no waiting for runs (no worker here) and no request-rate limit,
    so the fuzzer's speed does not turn documented answers into 429s (tested below)."""
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "RUN_DEFAULT_WAIT_SECONDS": 0.0,
        "RUN_MAX_WAIT_SECONDS": 0.0,
    }
    services.update_quotas(
        actor=ACTOR,
        tenant=owner.tenant,
        tier=None,
        overrides={"requests_per_minute": None, "requests_per_minute_per_key": None},
    )
    run = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "fuzz", "message": "How do I reset my password?"},
        headers={"Prefer": "respond-async"},
    ).json()
    document = KnowledgeDocument.unscoped.filter(agent=agent).order_by("created_at").first()
    assert document is not None
    review = request_review(
        run=Run.unscoped.get(pk=run["id"]),
        result={"intent": "PASSWORD_RESET", "proposed_answer": "Open Settings > Security."},
        actor=ACTOR,
    )
    return {
        "agent_id": str(agent.pk),
        "run_id": run["id"],
        "session_id": run["session_id"],
        "document_id": str(document.pk),
        "request_id": str(review.pk),
        # A tool the agent does not have (issue 17): its invoke answers a documented 404.
        "tool_id": "no_such_tool",
        "invitation_id": str(
            invite_member(
                actor=ACTOR, tenant=owner.tenant, role="viewer", email="new@example.com"
            ).invitation.pk
        ),
        # The owner's webhook endpoint, event rule, activity event and graph node.
        **owner_integrations(owner, agent)[0],
    }


def _fuzz(
    operation: Any,
    mode: Any,
    path_parameters: dict[str, str] | None,
    call: Callable[[Any], Any],
    tally: Tally,
    max_examples: int,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @hypothesis_settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    def run(case: Any) -> None:
        tally.record(operation.label, case, call(case))

    run()


@pytest.mark.timeout(300)  # ~40 operations x 2 modes x (1-2) id sets: about 100 s unloaded
def test_tenant_api_conforms_to_its_schema(
    owner: Persona, contract_ids: dict[str, str], record_property: Callable[[str, object], None]
) -> None:
    """Positive and negative schemathesis cases for every tenant operation, with
    generated and with the owner's real path ids: no 5xx and every answer documented."""
    authorization = f"Bearer {owner.key}"

    def call(case: Any) -> Any:
        case.headers = {**(case.headers or {}), "Authorization": authorization}
        return case.call()

    tally = Tally()
    with in_test_transaction():
        operations = tenant_operations()
        for operation in operations:
            real = {
                name: value
                for name, value in contract_ids.items()
                if f"{{{name}}}" in operation.path
            }
            for path_parameters in (None, real) if real else (None,):
                writes = path_parameters and operation.method.upper() in WRITE_METHODS
                examples = MAX_EXAMPLES_REAL_WRITES if writes else MAX_EXAMPLES
                for mode in MODES:
                    _fuzz(operation, mode, path_parameters, call, tally, examples)
    total = sum(tally.cases.values())
    print(tally.report())
    record_property("schemathesis_cases", total)
    assert total > 0
    assert {op.label for op in operations} == set(tally.cases), "an operation got no cases"
    assert not tally.failures, "schema violations:\n\n" + "\n\n".join(
        f"{key}\n{detail}" for key, detail in sorted(tally.failures.items())
    )


def test_rate_limited_answers_are_documented(owner: Persona, contract_ids: dict[str, str]) -> None:
    """Every tenant operation answers 429 when the tenant's requests_per_minute is used up
    (SPEC 5: rate limits answer 429 with Retry-After), so each must document 429 and the
    429 must match the documented error body."""
    services.update_quotas(
        actor=ACTOR, tenant=owner.tenant, tier=None, overrides={"requests_per_minute": 0}
    )
    tally = Tally()
    with in_test_transaction():
        for operation in tenant_operations():
            ids = {
                name: value
                for name, value in contract_ids.items()
                if f"{{{name}}}" in operation.path
            }
            case = operation.Case(
                path_parameters=ids, headers={"Authorization": f"Bearer {owner.key}"}
            )
            response = case.call()
            assert response.status_code == 429, (operation.label, response.status_code)
            assert response.headers.get("retry-after"), operation.label
            tally.record(operation.label, case, response)
    assert tally.cases, "no operations"
    assert not tally.failures, "undocumented 429s:\n" + "\n".join(sorted(tally.failures))


def test_refused_request_bodies_are_documented(
    owner: Persona, contract_ids: dict[str, str]
) -> None:
    """Every tenant operation that takes a JSON body refuses a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE with 413 and a text/plain body with 415 (SPEC 14); both
    answers must be documented for the operation and match the documented error body."""
    oversize = "x" * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    tally = Tally()
    with in_test_transaction():
        for operation in tenant_operations():
            if operation.method.upper() not in WRITE_METHODS:
                continue
            ids = {
                name: value
                for name, value in contract_ids.items()
                if f"{{{name}}}" in operation.path
            }
            headers = {"Authorization": f"Bearer {owner.key}"}
            for status, body, media_type in (
                (413, oversize, "application/json"),
                (415, "x", "text/plain"),
            ):
                case = operation.Case(
                    path_parameters=ids, headers=headers, body=body, media_type=media_type
                )
                response = case.call()
                assert response.status_code == status, (operation.label, response.status_code)
                tally.record(operation.label, case, response)
    assert tally.cases
    assert not tally.failures, "undocumented refusals:\n" + "\n".join(sorted(tally.failures))
