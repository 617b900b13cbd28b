"""Every bad input gets a clear error and changes nothing (SPEC 5 and 14, ARCHITECTURE habit 8).

Each test names the bad inputs it sends in its docstring, asserts the status, the error
body ``{detail, error_type, correlation_id, timestamp}`` (422s name the failing field) and
that the tenant's rows are exactly as before (``nothing_written``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.db.models import Sum
from django.test import Client

from agentflow.models import Agent, Run
from governance.models import AuditEvent
from tenants import ratelimit, services
from tenants.models import APIKey, IdempotencyRecord, Tenant, UsageDay
from tenants.scoping import TenantOwnedModel
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona, make_agent

ERROR_KEYS = frozenset({"detail", "error_type", "correlation_id", "timestamp"})
MAX_UPLOAD_BYTES = cast(int, django_settings.AGENTFLOW["MAX_UPLOAD_BYTES"])
RUNS = "/api/v1/agents/{agent}/runs"
MESSAGES = "/api/v1/agents/{agent}/messages"
AGENTS = "/api/v1/agents"
AGENT = "/api/v1/agents/{agent}"
KNOWLEDGE = "/api/v1/agents/{agent}/knowledge"
ASYNC = {"Prefer": "respond-async"}  # no worker here: runs are created, never waited for


# --- helpers shared by the API contract tests -------------------------------------------


def footprint(tenant: Tenant) -> dict[str, Any]:
    """Everything a request could have written for ``tenant``: row counts of every
    tenant-owned table, the audit chain and the idempotency records, plus the mutable
    state of tenant, agents, runs, keys and usage. ``APIKey.last_used_at`` is left out:
    authenticating writes it."""
    state: dict[str, Any] = {
        model._meta.label: model.unscoped.filter(tenant=tenant).count()
        for model in apps.get_models()
        if issubclass(model, TenantOwnedModel)
    }
    state["audit_events"] = AuditEvent.unscoped.filter(tenant=tenant).count()
    # Idempotency records are namespaced, not tenant-owned rows: count them all.
    state["idempotency_records_all_owners"] = IdempotencyRecord.objects.count()
    state["tenant"] = (
        Tenant.objects.filter(pk=tenant.pk)
        .values("name", "slug", "tier", "status", "quota_overrides", "preferences")
        .get()
    )
    state["agents"] = sorted(
        (str(pk), name, version, json.dumps(config, sort_keys=True))
        for pk, name, version, config in Agent.unscoped.filter(tenant=tenant).values_list(
            "id", "name", "version", "config"
        )
    )
    state["runs"] = sorted(
        (str(pk), status)
        for pk, status in Run.unscoped.filter(tenant=tenant).values_list("id", "status")
    )
    state["keys"] = sorted(
        (pk, str(revoked), str(expires), json.dumps(scopes))
        for pk, revoked, expires, scopes in APIKey.unscoped.filter(tenant=tenant).values_list(
            "id", "revoked_at", "expires_at", "scopes"
        )
    )
    state["usage"] = UsageDay.unscoped.filter(tenant=tenant).aggregate(
        runs=Sum("runs"), tokens=Sum("tokens"), dollars=Sum("dollars")
    )
    return state


@contextmanager
def nothing_written(*tenants: Tenant) -> Iterator[None]:
    before = [footprint(tenant) for tenant in tenants]
    yield
    for tenant, was in zip(tenants, before, strict=True):
        now = footprint(tenant)
        changed = {name: (was[name], now[name]) for name in was if was[name] != now[name]}
        assert not changed, f"a rejected request wrote to {tenant.slug}'s data: {changed}"


def assert_error(response: Any, status: int, error_type: str | None = None) -> dict[str, Any]:
    """The one error body of the API, with the correlation id of the response header."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body: dict[str, Any] = json.loads(response.content)
    assert body.keys() >= ERROR_KEYS, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["correlation_id"] == response["X-Correlation-ID"]
    assert body["timestamp"].endswith("Z")
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    if error_type is not None:
        assert body["error_type"] == error_type, body
    return body


def assert_field_errors(response: Any, *fields: str) -> dict[str, Any]:
    body = assert_error(response, 422, "validation_error")
    for name in fields:
        assert name in body.get("errors", {}), (name, body)
        assert body["errors"][name], body
    return body


def lenient(persona: Persona) -> Persona:
    """The persona with a client that answers 500 instead of raising the server's exception."""
    return replace(persona, client=Client(raise_request_exception=False))


def send(persona: Persona, method: str, path: str, body: Any = None, **headers: str) -> Any:
    if method == "GET":
        return persona.get(path, headers=headers)
    if method == "DELETE":
        return persona.delete(path, headers=headers)
    if method == "PATCH":
        return persona.patch(path, body, headers=headers)
    return persona.post(path, body, headers=headers)


def upload(persona: Persona, path: str, name: str, content: bytes, content_type: str) -> Any:
    return persona.client.post(
        path,
        {"file": SimpleUploadedFile(name, content, content_type=content_type), "title": name},
        headers={"Authorization": f"Bearer {persona.key}"},
    )


@pytest.fixture
def api(owner: Persona) -> Persona:
    return lenient(owner)


def _path(template: str, agent: Agent) -> str:
    return template.format(agent=agent.pk)


# --- malformed, mistyped, unknown, missing, empty -----------------------------------------

WRITE_ENDPOINTS = [("POST", RUNS), ("POST", AGENTS), ("PATCH", AGENT), ("POST", KNOWLEDGE)]


@pytest.mark.parametrize(
    "raw",
    [
        '{"user_id": "u", "message": "hi"',
        "not json at all",
        "{'user_id': 'u'}",
        '{"user_id": "u", "message": "hi", "metadata": {"x": NaN}}',
        b'{"user_id": "\xff\xfe"}',
    ],
    ids=["truncated", "plain-text", "single-quotes", "NaN", "invalid-utf8"],
)
def test_malformed_json_is_400_malformed_request(
    api: Persona, agent: Agent, raw: str | bytes
) -> None:
    """Truncated JSON, plain text, single-quoted pseudo-JSON, a NaN literal and bytes that
    are not UTF-8, sent as application/json to every write endpoint: 400 malformed_request."""
    for method, template in WRITE_ENDPOINTS:
        with nothing_written(api.tenant):
            response = send(api, method, _path(template, agent), raw, **ASYNC)
            assert_error(response, 400, "malformed_request")


WRONG_TYPES = [
    (RUNS, {"user_id": "u", "message": ["hi"]}, "message"),
    (RUNS, {"user_id": "u", "message": {"text": "hi"}}, "message"),
    (RUNS, {"user_id": True, "message": "hi"}, "user_id"),
    (RUNS, {"user_id": "u", "message": "hi", "metadata": ["a"]}, "metadata"),
    (RUNS, {"user_id": "u", "message": "hi", "metadata": "a=b"}, "metadata"),
    # Markers only the platform sets: a client's would hide its runs from learning.
    (RUNS, {"user_id": "u", "message": "hi", "metadata": {"playground": True}}, "metadata"),
    (RUNS, {"user_id": "u", "message": "hi", "metadata": {"tool_invocation": 1}}, "metadata"),
    (RUNS, {"user_id": "u", "message": "hi", "priority": 3}, "priority"),
    (RUNS, ["user_id", "message"], "non_field_errors"),
    (RUNS, '"just a string"', "non_field_errors"),
    (AGENTS, {"name": ["a"], "blueprint": "support_agent"}, "name"),
    (AGENTS, {"name": "a", "blueprint": None}, "blueprint"),
    (AGENTS, {"name": "a", "blueprint": "support_agent", "config": ["x"]}, "config"),
    (KNOWLEDGE, {"title": {"a": 1}, "content": "text"}, "title"),
    (KNOWLEDGE, {"title": "t", "content": ["text"]}, "content"),
    (KNOWLEDGE, {"title": "t", "content": "text", "content_type": 7}, "content_type"),
]


@pytest.mark.parametrize(("template", "body", "field"), WRONG_TYPES)
def test_wrong_types_are_422_naming_the_field(
    api: Persona, agent: Agent, template: str, body: Any, field: str
) -> None:
    """Lists, objects, booleans and null where strings belong; a list or string where an
    object belongs; a number as the priority; a JSON array or string as the whole body."""
    with nothing_written(api.tenant):
        response = api.post(_path(template, agent), body, headers=ASYNC)
        assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("template", "body", "field"),
    [
        (RUNS, {"user_id": 123, "message": "hi"}, "user_id"),
        (RUNS, {"user_id": "u", "message": 12.5}, "message"),
        (AGENTS, {"name": 42, "blueprint": "support_agent", "config": SUPPORT_CONFIG}, "name"),
        (KNOWLEDGE, {"title": 1, "content": "text"}, "title"),
    ],
    ids=["run-user_id", "run-message", "agent-name", "document-title"],
)
def test_numbers_are_not_silently_turned_into_strings(
    api: Persona, agent: Agent, template: str, body: Any, field: str
) -> None:
    """A JSON number (123, 12.5) where the contract says string: a wrong type, so 422
    naming the field (habit 8, "validate strictly") rather than a row holding "123"."""
    with nothing_written(api.tenant):
        response = api.post(_path(template, agent), body, headers=ASYNC)
        assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("method", "template", "body", "fields"),
    [
        ("POST", RUNS, {"user_id": "u", "message": "hi", "prority": "high"}, ["prority"]),
        (
            "POST",
            RUNS,
            {"user_id": "u", "message": "hi", "tenant_id": 1, "x": 0},
            ["tenant_id", "x"],
        ),
        ("POST", AGENTS, {"name": "a", "blueprint": "support_agent", "colour": "red"}, ["colour"]),
        ("PATCH", AGENT, {"nmae": "renamed"}, ["nmae"]),
        ("PATCH", AGENT, {"name": "renamed", "version": 99}, ["version"]),
        ("POST", KNOWLEDGE, {"title": "t", "content": "text", "tags": ["a"]}, ["tags"]),
    ],
    ids=["run-typo", "run-two-unknown", "agent", "agent-patch-typo", "agent-patch-readonly", "doc"],
)
def test_unknown_fields_are_422_naming_each_field(
    api: Persona, agent: Agent, method: str, template: str, body: Any, fields: list[str]
) -> None:
    """Typos of real fields (prority, nmae), fields the client may not set (tenant_id,
    version) and invented ones (colour, tags, x): each is named in the 422."""
    with nothing_written(api.tenant):
        response = send(api, method, _path(template, agent), body, **ASYNC)
        assert_field_errors(response, *fields)


@pytest.mark.parametrize(
    ("template", "body", "fields"),
    [
        (RUNS, {}, ["user_id", "message"]),
        (RUNS, {"user_id": "u"}, ["message"]),
        (RUNS, {"message": "hi"}, ["user_id"]),
        (AGENTS, {}, ["name", "blueprint"]),
        (AGENTS, {"name": "a"}, ["blueprint"]),
        (KNOWLEDGE, {}, ["title", "content"]),
        (KNOWLEDGE, {"title": "t"}, ["content"]),
    ],
)
def test_missing_required_fields_are_422_naming_them(
    api: Persona, agent: Agent, template: str, body: Any, fields: list[str]
) -> None:
    """An empty object and objects missing one required field, for runs, agents and
    knowledge documents: every missing field is named."""
    with nothing_written(api.tenant):
        response = api.post(_path(template, agent), body, headers=ASYNC)
        assert_field_errors(response, *fields)


@pytest.mark.parametrize(
    ("method", "template", "body", "field"),
    [
        ("POST", RUNS, {"user_id": "u", "message": ""}, "message"),
        ("POST", RUNS, {"user_id": "u", "message": "   \n\t"}, "message"),
        ("POST", RUNS, {"user_id": "", "message": "hi"}, "user_id"),
        ("POST", AGENTS, {"name": "", "blueprint": "support_agent"}, "name"),
        ("POST", AGENTS, {"name": "a", "blueprint": ""}, "blueprint"),
        ("PATCH", AGENT, {"name": ""}, "name"),
        ("POST", KNOWLEDGE, {"title": "", "content": "text"}, "title"),
        ("POST", KNOWLEDGE, {"title": "t", "content": ""}, "content"),
        ("POST", KNOWLEDGE, {"title": "t", "content": "   \n"}, "content"),
    ],
)
def test_empty_strings_are_422_naming_the_field(
    api: Persona, agent: Agent, method: str, template: str, body: Any, field: str
) -> None:
    """Empty and whitespace-only strings for every required text field (message, user_id,
    agent name and blueprint, document title and content)."""
    with nothing_written(api.tenant):
        response = send(api, method, _path(template, agent), body, **ASYNC)
        assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("template", "body", "field"),
    [
        (RUNS, {"user_id": "u", "message": "hi", "metadata": {"note": "a\u0000b"}}, "metadata"),
        (RUNS, {"user_id": "u", "message": "hi", "metadata": {"\u0000": 1}}, "metadata"),
        (RUNS, {"user_id": "u", "message": "hi", "metadata": {"note": "\ud800"}}, "metadata"),
        (AGENTS, {"name": "nul", "blueprint": "support_agent", "config": "NUL"}, "config"),
        (AGENTS, {"name": "sur", "blueprint": "support_agent", "config": "SURROGATE"}, "config"),
    ],
    ids=[
        "metadata-nul-value",
        "metadata-nul-key",
        "metadata-surrogate",
        "config-nul",
        "config-surrogate",
    ],
)
def test_text_the_database_cannot_store_is_422_not_500(
    api: Persona, agent: Agent, template: str, body: dict[str, Any], field: str
) -> None:
    r"""A NUL character (\u0000) or a lone UTF-16 surrogate (\ud800) inside a JSON object
    field (run metadata, agent config): PostgreSQL cannot store either, so the API must
    reject them as a 422 naming the field, as it already does for plain string fields."""
    if body.get("config") in ("NUL", "SURROGATE"):
        config = json.loads(json.dumps(SUPPORT_CONFIG))
        bad = "a\u0000b" if body["config"] == "NUL" else "\ud800"
        config["intent_categories"][0]["description"] = bad
        body = {**body, "config": config}
    with nothing_written(api.tenant):
        response = api.post(_path(template, agent), json.dumps(body), headers=ASYNC)
        assert_field_errors(response, field)


def test_patching_a_config_the_database_cannot_store_is_422_not_500(
    api: Persona, agent: Agent
) -> None:
    r"""PATCH an agent's config with a NUL character (\u0000) in a category description."""
    config = json.loads(json.dumps(SUPPORT_CONFIG))
    config["intent_categories"][0]["description"] = "a\u0000b"
    with nothing_written(api.tenant):
        response = api.patch(f"/api/v1/agents/{agent.pk}", json.dumps({"config": config}))
        assert_field_errors(response, "config")


# --- sizes and media types ----------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1,
        MAX_UPLOAD_BYTES + 1,
    ],
    ids=["over-DATA_UPLOAD_MAX_MEMORY_SIZE", "over-MAX_UPLOAD_BYTES"],
)
def test_json_body_over_the_limit_is_413(api: Persona, agent: Agent, size: int) -> None:
    """A run whose JSON body is one byte over DATA_UPLOAD_MAX_MEMORY_SIZE (read by the
    parser) and one over MAX_UPLOAD_BYTES (refused by the middleware before reading)."""
    body = json.dumps({"user_id": "u", "message": ""})
    padded = body.replace('"message": ""', '"message": "' + "x" * (size - len(body)) + '"')
    assert len(padded.encode()) == size
    with nothing_written(api.tenant):
        response = api.post(_path(RUNS, agent), padded, headers=ASYNC)
        assert_error(response, 413, "payload_too_large")


def test_knowledge_over_max_upload_bytes_is_413(api: Persona, agent: Agent, settings: Any) -> None:
    """With MAX_UPLOAD_BYTES lowered to 1 KiB: a JSON document of 1 KiB + 1 byte and a
    multipart file of 1 KiB + 1 byte are 413; a document of exactly 1 KiB is accepted."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_UPLOAD_BYTES": 1024}
    path = _path(KNOWLEDGE, agent)
    with nothing_written(api.tenant):
        as_json = api.post(path, {"title": "big", "content": "y" * 1025})
        as_file = upload(api, path, "big.txt", b"y" * 1025, "text/plain")
        assert_error(as_json, 413, "payload_too_large")
        assert_error(as_file, 413, "payload_too_large")
    assert api.post(path, {"title": "fits", "content": "z " * 512}).status_code == 201


def test_knowledge_file_over_the_default_max_upload_bytes_is_413(
    api: Persona, agent: Agent
) -> None:
    """A multipart text file one byte larger than the default MAX_UPLOAD_BYTES."""
    size = MAX_UPLOAD_BYTES + 1
    with nothing_written(api.tenant):
        response = upload(api, _path(KNOWLEDGE, agent), "huge.md", b"w" * size, "text/markdown")
        assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("manual.pdf", "application/pdf"), ("diagram.png", "image/png"), ("page.html", "text/html")],
)
def test_unsupported_upload_media_type_is_415(
    api: Persona, agent: Agent, name: str, content_type: str
) -> None:
    """Uploading a PDF, a PNG and an HTML page as knowledge: 415 listing the allowed types."""
    with nothing_written(api.tenant):
        response = upload(api, _path(KNOWLEDGE, agent), name, b"%PDF-1.4 ...", content_type)
        body = assert_error(response, 415, "unsupported_media_type")
        assert body["allowed"] == ["text/plain", "text/markdown"]


@pytest.mark.parametrize(
    ("template", "content_type", "raw"),
    [
        (RUNS, "text/xml", "<run><message>hi</message></run>"),
        (RUNS, "application/x-www-form-urlencoded", "user_id=u&message=hi"),
        (AGENTS, "text/plain", "name=a"),
    ],
)
def test_unsupported_request_content_type_is_415(
    api: Persona, agent: Agent, template: str, content_type: str, raw: str
) -> None:
    """XML, a urlencoded form and text/plain bodies where only JSON is parsed."""
    with nothing_written(api.tenant):
        response = api.post(_path(template, agent), raw, content_type=content_type, headers=ASYNC)
        assert_error(response, 415, "unsupported_media_type")


def test_unsupported_document_declarations_are_422(api: Persona, agent: Agent) -> None:
    """A JSON document declaring content_type application/pdf, and a multipart .txt file
    whose bytes are not UTF-8 (Latin-1 text)."""
    path = _path(KNOWLEDGE, agent)
    with nothing_written(api.tenant):
        declared = api.post(path, {"title": "t", "content": "x", "content_type": "application/pdf"})
        latin1 = upload(api, path, "latin1.txt", "café crème".encode("latin-1"), "text/plain")
        assert_field_errors(declared, "content_type")
        assert_field_errors(latin1, "file")


# --- enums, paging, sorting, paths ---------------------------------------------------------


@pytest.mark.parametrize("priority", ["urgent", "NORMAL", "", "Medium"])
def test_unknown_priority_is_422(api: Persona, agent: Agent, priority: str) -> None:
    """Priorities outside low|medium|high|critical: urgent, NORMAL, empty, Medium."""
    with nothing_written(api.tenant):
        response = api.post(
            _path(RUNS, agent),
            {"user_id": "u", "message": "hi", "priority": priority},
            headers=ASYNC,
        )
        assert_field_errors(response, "priority")


@pytest.mark.parametrize("template", [RUNS, MESSAGES])
def test_priority_normal_is_accepted_as_medium_with_a_deprecation_header(
    api: Persona, agent: Agent, template: str
) -> None:
    response = api.post(
        _path(template, agent),
        {"user_id": "u", "message": "hi", "priority": "normal"},
        headers=ASYNC,
    )
    assert response.status_code == 202, response.content
    assert response.json()["priority"] == "medium"
    assert response["Deprecation"] == "true"
    assert "normal" in response["X-Deprecation-Notice"]
    assert Run.unscoped.get(pk=response.json()["id"]).priority == "medium"
    plain = api.post(
        _path(template, agent),
        {"user_id": "u", "message": "hi", "priority": "medium"},
        headers=ASYNC,
    )
    assert plain.status_code == 202
    assert not plain.has_header("Deprecation")


@pytest.mark.parametrize(
    ("template", "query", "field"),
    [
        (AGENTS, "limit=0", "limit"),
        (AGENTS, "limit=201", "limit"),
        (AGENTS, "limit=ten", "limit"),
        (AGENTS, "limit=1.5", "limit"),
        (AGENTS, "offset=-1", "offset"),
        (AGENTS, "offset=x", "offset"),
        (AGENTS, "sort_by=config", "sort_by"),
        (AGENTS, "sort_order=up", "sort_order"),
        ("/api/v1/runs", "status=done", "status"),
        ("/api/v1/runs", "sort_by=input", "sort_by"),
        ("/api/v1/runs", "sort_by=created_at&sort_order=random", "sort_order"),
        (RUNS, "limit=-5", "limit"),
        (KNOWLEDGE, "limit=1000", "limit"),
    ],
)
def test_invalid_paging_and_sorting_params_are_422(
    api: Persona, agent: Agent, template: str, query: str, field: str
) -> None:
    """limit 0, 201, "ten", 1.5 and -5; offset -1 and "x"; sort_by on fields that are not
    sortable (config, input); sort_order "up" and "random"; an unknown run status."""
    with nothing_written(api.tenant):
        response = api.get(f"{_path(template, agent)}?{query}")
        assert_field_errors(response, field)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/agents/not-a-uuid"),
        ("PATCH", "/api/v1/agents/123"),
        ("DELETE", "/api/v1/agents/00000000-0000-0000-0000-00000000000g"),
        ("POST", "/api/v1/agents/not-a-uuid/runs"),
        ("GET", "/api/v1/runs/42"),
        ("DELETE", "/api/v1/runs/%27%20OR%201=1"),
        ("GET", "/api/v1/sessions/zzz/conversation"),
        ("GET", "/api/v1/agents/{agent}/knowledge/nope"),
    ],
)
def test_invalid_uuids_in_paths_are_404(api: Persona, agent: Agent, method: str, path: str) -> None:
    """Words, integers, a UUID with a non-hex digit and an SQL fragment where a UUID goes."""
    with nothing_written(api.tenant):
        response = send(api, method, path.format(agent=agent.pk), {"user_id": "u", "message": "hi"})
        assert_error(response, 404, "not_found")


# --- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer not-a-key",
        "Bearer af_short_secret",
        "Bearer af_000000000000_" + "s" * 43,
        "Basic dXNlcjpwYXNz",
        "Token abc",
    ],
    ids=[
        "absent",
        "empty",
        "bearer-only",
        "bearer-space",
        "three-parts",
        "not-a-key",
        "short-prefix",
        "unknown-prefix",
        "basic",
        "token",
    ],
)
def test_bad_authorization_headers_are_401(
    owner: Persona, agent: Agent, authorization: str | None
) -> None:
    """Absent, empty and malformed Authorization headers, a well-formed key that does not
    exist, and other schemes (Basic, Token): 401 with the error body and a Bearer challenge,
    for a read and for a write."""
    client = Client(raise_request_exception=False)
    headers = {} if authorization is None else {"Authorization": authorization}
    with nothing_written(owner.tenant):
        read = client.get("/api/v1/agents", headers=headers)
        write = client.post(
            _path(RUNS, agent),
            {"user_id": "u", "message": "hi"},
            content_type="application/json",
            headers={**headers, **ASYNC},
        )
        for response in (read, write):
            assert_error(response, 401, "authentication_failed")
            assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_expired_and_rotated_keys_are_401(owner: Persona, agent: Agent) -> None:
    """A revoked key, a key whose expires_at passed, and the old key of a rotation without
    overlap; the replacement key works."""
    revoked = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="revoked")
    services.revoke_key(actor=ACTOR, key=revoked.key)
    expired = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="expired")
    APIKey.unscoped.filter(pk=expired.key.pk).update(
        expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    old = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="rotated")
    new = services.rotate_key(actor=ACTOR, key=old.key)
    for plaintext in (revoked.plaintext, expired.plaintext, old.plaintext):
        persona = lenient(replace(owner, key=plaintext))
        with nothing_written(owner.tenant):
            read = persona.get("/api/v1/agents")
            write = persona.post(
                _path(RUNS, agent), {"user_id": "u", "message": "hi"}, headers=ASYNC
            )
            for response in (read, write):
                body = assert_error(response, 401, "authentication_failed")
                assert "revoked or expired" in body["detail"]
    assert replace(owner, key=new.plaintext).get("/api/v1/agents").status_code == 200


def test_a_suspended_tenants_keys_stop_at_once(owner: Persona, agent: Agent) -> None:
    """Every key of a suspended tenant, on reads and writes: 403 saying it is suspended."""
    second = services.issue_key(actor=ACTOR, tenant=owner.tenant, name="second")
    assert owner.get("/api/v1/agents").status_code == 200
    services.set_status(actor=ACTOR, tenant=owner.tenant, status="suspended")
    for plaintext in (owner.key, second.plaintext):
        persona = lenient(replace(owner, key=plaintext))
        with nothing_written(owner.tenant):
            read = persona.get(f"/api/v1/agents/{agent.pk}")
            write = persona.post(
                _path(RUNS, agent), {"user_id": "u", "message": "hi"}, headers=ASYNC
            )
            for response in (read, write):
                assert "suspended" in assert_error(response, 403)["detail"]


# --- Idempotency-Key ------------------------------------------------------------------------


def test_idempotent_replay_returns_the_first_response(api: Persona, agent: Agent) -> None:
    """The same run POST with the same Idempotency-Key three times: one run; the replays
    carry the first status, body, Location and Retry-After, plus Idempotent-Replayed."""
    path, body = _path(RUNS, agent), {"user_id": "u", "message": "hi", "priority": "high"}
    headers = {"Idempotency-Key": "order-42", **ASYNC}
    first = api.post(path, body, headers=headers)
    assert first.status_code == 202
    assert not first.has_header("Idempotent-Replayed")
    with nothing_written(api.tenant):
        replays = [api.post(path, body, headers=headers) for _ in range(2)]
        for replay in replays:
            assert replay.status_code == first.status_code
            assert replay.json() == first.json()
            assert replay["Location"] == first["Location"]
            assert replay["Retry-After"] == first["Retry-After"]
            assert replay["Idempotent-Replayed"] == "true"
        assert Run.unscoped.filter(tenant=api.tenant).count() == 1


def test_idempotent_replay_of_an_agent_creation(api: Persona) -> None:
    """POST /agents twice with one Idempotency-Key: the replay is the first 201, not a 409."""
    body = {"name": "replayed", "blueprint": "support_agent", "config": SUPPORT_CONFIG}
    first = api.post(AGENTS, body, headers={"Idempotency-Key": "agent-1"})
    assert first.status_code == 201
    with nothing_written(api.tenant):
        replay = api.post(AGENTS, body, headers={"Idempotency-Key": "agent-1"})
        assert (replay.status_code, replay.json()) == (201, first.json())
        assert replay["Idempotent-Replayed"] == "true"


def test_idempotency_key_reused_with_another_body_is_422(api: Persona, agent: Agent) -> None:
    """The same Idempotency-Key with a different message, and with an extra field."""
    path, headers = _path(RUNS, agent), {"Idempotency-Key": "k-1", **ASYNC}
    assert api.post(path, {"user_id": "u", "message": "hi"}, headers=headers).status_code == 202
    for other in (
        {"user_id": "u", "message": "bye"},
        {"user_id": "u", "message": "hi", "priority": "low"},
    ):
        with nothing_written(api.tenant):
            response = api.post(path, other, headers=headers)
            assert_field_errors(response, "Idempotency-Key")


def test_a_rejected_first_attempt_does_not_pin_the_idempotency_key(
    api: Persona, agent: Agent
) -> None:
    """An invalid body (empty message) under a key, then the corrected body under the same
    key: the first is 422 and stores nothing; the second creates the run."""
    path, headers = _path(RUNS, agent), {"Idempotency-Key": "retry-me", **ASYNC}
    with nothing_written(api.tenant):
        rejected = api.post(path, {"user_id": "u", "message": ""}, headers=headers)
        assert_field_errors(rejected, "message")
    accepted = api.post(path, {"user_id": "u", "message": "hi"}, headers=headers)
    assert accepted.status_code == 202
    assert not accepted.has_header("Idempotent-Replayed")


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "tab\there"], ids=["empty", "too-long", "control-char"]
)
def test_invalid_idempotency_keys_are_422(api: Persona, agent: Agent, key: str) -> None:
    """An empty key, a 256-character key and a key with a control character."""
    with nothing_written(api.tenant):
        response = api.post(
            _path(RUNS, agent),
            {"user_id": "u", "message": "hi"},
            headers={"Idempotency-Key": key, **ASYNC},
        )
        assert_field_errors(response, "Idempotency-Key")


def test_idempotency_keys_are_scoped_per_tenant(api: Persona, outsider: Persona) -> None:
    """Two tenants create an agent with the same Idempotency-Key and body: each gets its
    own agent; neither is served the other's stored response."""
    body = {"name": "same-name", "blueprint": "support_agent", "config": SUPPORT_CONFIG}
    mine = api.post(AGENTS, body, headers={"Idempotency-Key": "shared"})
    theirs = outsider.post(AGENTS, body, headers={"Idempotency-Key": "shared"})
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert not theirs.has_header("Idempotent-Replayed")
    assert mine.json()["id"] != theirs.json()["id"]
    assert Agent.unscoped.get(pk=theirs.json()["id"]).tenant_id == outsider.tenant.pk


def test_idempotent_tenant_creation_by_a_platform_admin(db: None) -> None:
    """POST /api/v1/tenants (platform admin) with an Idempotency-Key, twice: one tenant,
    the second answer a replay of the first 201 (the view is decorated @idempotent)."""
    staff = get_user_model().objects.create_user("platform-admin", is_staff=True)
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    headers = {"Idempotency-Key": "new-tenant-1"}
    first = client.post(
        "/api/v1/tenants", {"name": "Umbrella"}, "application/json", headers=headers
    )
    assert first.status_code == 201, first.content
    replay = client.post(
        "/api/v1/tenants", {"name": "Umbrella"}, "application/json", headers=headers
    )
    assert (replay.status_code, replay.json()) == (201, first.json())
    assert replay["Idempotent-Replayed"] == "true"
    assert Tenant.objects.filter(slug="umbrella").count() == 1


def _concurrently(count: int, call: Callable[[int, Client], Any]) -> list[Any]:
    """``call(index, client)`` from ``count`` threads released together, each with its own
    client (and so its own database connection, closed when done)."""
    barrier = threading.Barrier(count)

    def one(index: int) -> Any:
        client = Client(raise_request_exception=False)
        try:
            barrier.wait(timeout=30)
            return call(index, client)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_with_one_idempotency_key_create_one_run(owner: Persona) -> None:
    """20 simultaneous identical run POSTs with one Idempotency-Key, from 20 threads."""
    agent = make_agent(owner)
    headers = {"Authorization": f"Bearer {owner.key}", "Idempotency-Key": "burst", **ASYNC}
    responses = _concurrently(
        20,
        lambda _, client: client.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": "u", "message": "hi"},
            content_type="application/json",
            headers=headers,
        ),
    )
    assert [r.status_code for r in responses] == [202] * 20, [r.content[:200] for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(not r.has_header("Idempotent-Replayed") for r in responses) == 1
    assert Run.unscoped.filter(tenant=owner.tenant).count() == 1
    assert AuditEvent.unscoped.filter(tenant=owner.tenant, action="run.created").count() == 1


# --- quotas and rate limits -----------------------------------------------------------------


def _next_month_start() -> str:
    now = datetime.now(UTC)
    start = (
        now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)
    ).replace(day=1)
    return start.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db(transaction=True)
def test_runs_per_month_admits_exactly_the_limit_under_concurrency(owner: Persona) -> None:
    """15 simultaneous run POSTs against runs_per_month = 5: exactly 5 accepted, 10 are
    429 with Retry-After, naming runs_per_month and when it resets; 5 runs and usage 5."""
    limit, attempts = 5, 15
    agent = make_agent(owner)
    services.update_quotas(
        actor=ACTOR, tenant=owner.tenant, tier=None, overrides={"runs_per_month": limit}
    )
    headers = {"Authorization": f"Bearer {owner.key}", **ASYNC}
    responses = _concurrently(
        attempts,
        lambda index, client: client.post(
            f"/api/v1/agents/{agent.pk}/runs",
            {"user_id": f"user-{index}", "message": "hi"},
            content_type="application/json",
            headers=headers,
        ),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * limit + [429] * (attempts - limit)
    resets_at = _next_month_start()
    for response in responses:
        if response.status_code == 429:
            body = assert_error(response, 429, "quota_exceeded")
            assert body["limit"] == "runs_per_month"
            assert body["resets_at"] == resets_at
            assert int(response["Retry-After"]) > 0
    assert Run.unscoped.filter(tenant=owner.tenant).count() == limit
    assert footprint(owner.tenant)["usage"]["runs"] == limit


def test_exhausted_dollar_budget_is_402(api: Persona, agent: Agent) -> None:
    """A run POST after today's usage row already holds the month's dollar budget."""
    budget = api.tenant.quotas.dollars_per_month
    assert budget is not None
    UsageDay.unscoped.create(
        tenant=api.tenant, day=datetime.now(UTC).date(), dollars=budget + Decimal("0.01")
    )
    with nothing_written(api.tenant):
        response = api.post(_path(RUNS, agent), {"user_id": "u", "message": "hi"}, headers=ASYNC)
        body = assert_error(response, 402, "budget_exhausted")
        assert body["limit"] == "dollars_per_month"
        assert body["resets_at"] == _next_month_start()
        assert int(response["Retry-After"]) > 0


@pytest.fixture
def frozen_minute(monkeypatch: pytest.MonkeyPatch) -> float:
    """The rate limiter's clock, fixed 30 s into the current minute (no minute rollover)."""
    now = datetime.now(UTC).timestamp()
    frozen = now - now % 60 + 30
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: frozen))
    return frozen


def test_requests_per_minute_limit_is_429_naming_it(
    api: Persona, agent: Agent, frozen_minute: float
) -> None:
    """Four requests against requests_per_minute = 3: the fourth (a GET) and a fifth (a
    run POST) are 429 with Retry-After naming requests_per_minute; the POST writes nothing."""
    services.update_quotas(
        actor=ACTOR, tenant=api.tenant, tier=None, overrides={"requests_per_minute": 3}
    )
    assert [api.get("/api/v1/agents").status_code for _ in range(3)] == [200, 200, 200]
    with nothing_written(api.tenant):
        limited = [
            api.get("/api/v1/agents"),
            api.post(_path(RUNS, agent), {"user_id": "u", "message": "hi"}, headers=ASYNC),
        ]
        for response in limited:
            body = assert_error(response, 429, "quota_exceeded")
            assert body["limit"] == "requests_per_minute"
            assert response["Retry-After"] == "30"
            assert body["retry_after"] == 30
            assert body["resets_at"]


def test_per_key_rate_limit_is_429_naming_it_and_spares_other_keys(
    api: Persona, frozen_minute: float
) -> None:
    """Three requests with one key against requests_per_minute_per_key = 2: the third is
    429 naming requests_per_minute_per_key; another key of the same tenant still works."""
    services.update_quotas(
        actor=ACTOR, tenant=api.tenant, tier=None, overrides={"requests_per_minute_per_key": 2}
    )
    assert [api.get("/api/v1/usage").status_code for _ in range(2)] == [200, 200]
    body = assert_error(api.get("/api/v1/usage"), 429, "quota_exceeded")
    assert body["limit"] == "requests_per_minute_per_key"
    other = services.issue_key(actor=ACTOR, tenant=api.tenant, name="other")
    assert replace(api, key=other.plaintext).get("/api/v1/usage").status_code == 200


# --- hostile request lines and nesting (issue 13, item 7) -----------------------------------

NUL_FILTERS = [
    "/api/v1/activity?kind={v}",
    "/api/v1/graph/nodes?category={v}",
    "/api/v1/graph/nodes?key={v}",
    "/api/v1/graph/nodes?q={v}",
    "/api/v1/graph/similar-resolutions?category={v}",
    "/api/v1/learning/golden-paths?category={v}",
    "/api/v1/learning/playbooks?category={v}",
    "/api/v1/learning/playbooks/suggest?category={v}",
]


@pytest.mark.parametrize("value", ["%00", "a%00b"], ids=["nul", "nul-inside"])
@pytest.mark.parametrize("template", NUL_FILTERS)
def test_nul_in_a_query_filter_is_400_not_500(api: Persona, template: str, value: str) -> None:
    """The filters that answered 500 "PostgreSQL text fields cannot contain NUL": a NUL
    alone (%00) and inside a value (a%00b) are a 400 malformed_request naming the query."""
    with nothing_written(api.tenant):
        body = assert_error(api.get(template.format(v=value)), 400, "malformed_request")
    assert "query string contains a NUL character" in body["detail"]


@pytest.mark.parametrize(
    ("path", "part", "why"),
    [
        ("/api/v1/agents?sort_by=%ff%fe", "query string", "is not valid UTF-8"),
        ("/api/v1/agents?%c3=1", "query string", "is not valid UTF-8"),
        ("/api/v1/agents?%00=1", "query string", "contains a NUL character"),
        ("/api/v1/agents/%00", "path", "contains a NUL character"),
        ("/api/v1/agents/%ff%fe", "path", "is not valid UTF-8"),
        ("/runs/?status=%00", "query string", "contains a NUL character"),
    ],
    ids=["query-ff-fe", "query-truncated-utf8-key", "query-nul-key", "path-nul", "path-ff", "dash"],
)
def test_unreadable_paths_and_queries_are_400(api: Persona, path: str, part: str, why: str) -> None:
    """Percent-encoded bytes that are not UTF-8 (%ff%fe, a lone %c3) and NUL characters, in
    a query value, a query key, the path, and on a dashboard page: 400 in the error shape."""
    with nothing_written(api.tenant):
        body = assert_error(api.get(path), 400, "malformed_request")
    assert body["detail"] == f"The request's {part} {why}."


def test_query_string_over_the_limit_is_414(api: Persona, settings: Any) -> None:
    """A query string one byte over MAX_QUERY_STRING_BYTES (default and lowered to 100):
    414 uri_too_long naming both sizes; one of exactly the limit is served."""
    limit = getattr(django_settings, "MAX_QUERY_STRING_BYTES", 16384)
    over = "q=" + "x" * (limit - 1)
    with nothing_written(api.tenant):
        body = assert_error(api.get("/api/v1/graph/nodes?" + over), 414, "uri_too_long")
    assert f"{limit + 1} bytes exceeds the limit of {limit} bytes" in body["detail"]
    settings.MAX_QUERY_STRING_BYTES = 100
    assert_error(api.get("/api/v1/graph/nodes?q=" + "x" * 99), 414, "uri_too_long")
    assert api.get("/api/v1/graph/nodes?q=" + "x" * 98).status_code == 200


def _nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested objects and arrays, alternating, an object outermost."""
    opening = "".join("[" if level % 2 else '{"a":' for level in range(depth))
    closing = "".join("]" if level % 2 else "}" for level in reversed(range(depth)))
    return opening + leaf + closing


def _run_with_metadata(depth: int) -> str:
    return '{"user_id": "u", "message": "hi", "metadata": ' + _nested(depth - 1, '"x"') + "}"


def _agent_with_config(depth: int) -> str:
    config = json.dumps(SUPPORT_CONFIG)[:-1] + ', "extra": ' + _nested(depth - 2) + "}"
    return '{"name": "deep", "blueprint": "support_agent", "config": ' + config + "}"


@pytest.mark.parametrize(
    ("method", "template", "raw"),
    [
        ("POST", AGENTS, _nested(100_000)),
        ("POST", AGENTS, _agent_with_config(3_000)),
        ("POST", RUNS, _run_with_metadata(1_000)),
        ("PATCH", AGENT, '{"config": ' + _nested(3_000) + "}"),
        ("POST", KNOWLEDGE, '{"title": "t", "content": ' + _nested(2_000) + "}"),
        ("POST", RUNS, _run_with_metadata(65)),
    ],
    ids=["agents-100000", "config-3000", "metadata-1000", "patch-3000", "knowledge-2000", "65"],
)
def test_deeply_nested_json_is_400_not_500(
    api: Persona, agent: Agent, method: str, template: str, raw: str
) -> None:
    """Bodies that raised RecursionError (a whole body nested 100,000 levels, an agent
    config nested 3,000, run metadata nested 1,000), a PATCH and a knowledge document nested
    deeply, and run metadata one level past MAX_JSON_DEPTH (64): 400 malformed_request."""
    with nothing_written(api.tenant):
        response = send(api, method, _path(template, agent), raw, **ASYNC)
        body = assert_error(response, 400, "malformed_request")
    assert "nested deeper than 64 levels" in body["detail"]


def test_json_nested_to_the_limit_is_accepted(api: Persona, agent: Agent) -> None:
    """Run metadata that brings the body to exactly MAX_JSON_DEPTH levels is a run (202),
    and brackets inside strings do not count as nesting."""
    response = api.post(_path(RUNS, agent), _run_with_metadata(64), headers=ASYNC)
    assert response.status_code == 202, response.content[:300]
    in_strings = {"user_id": "u", "message": "[" * 5000 + "{" * 5000, "metadata": {"n": "]}" * 99}}
    assert api.post(_path(RUNS, agent), in_strings, headers=ASYNC).status_code == 202


@pytest.mark.parametrize("depth", [1_500, 65])
def test_deeply_nested_signed_webhook_is_422_not_500(owner: Persona, depth: int) -> None:
    """A generic webhook delivery correctly signed by the endpoint's secret whose body nests
    1,500 levels (a RecursionError before) and one level past the limit: 422 naming the
    body, and no delivery or activity event stored."""
    from learning.webhooks.services import create_endpoint
    from tests.platform.learning.conftest import sign

    issued = create_endpoint(actor=ACTOR, tenant=owner.tenant, provider="generic", name="deep")
    assert issued.secret is not None
    body = ('{"type": "ticket.created", "ticket": ' + _nested(depth - 1) + "}").encode()
    client = Client(raise_request_exception=False)
    with nothing_written(owner.tenant):
        response = client.post(
            f"/api/v1/webhooks/generic/{issued.endpoint.pk}",
            body,
            content_type="application/json",
            headers=sign("generic", issued.secret, body),
        )
        body_errors = assert_field_errors(response, "body")["errors"]["body"]
    assert "nested deeper than 64 levels" in body_errors[0]
