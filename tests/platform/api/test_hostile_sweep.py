"""Hostile input on every route: never a 5xx, always the error shape, nothing written.

Generated like the outsider matrix (tests/platform/api/test_outsiders.py): the routes and
methods come from the URL conf, each route's query parameters from the OpenAPI schema, and
each is called with hostile values (issue 13, item 7):

* in the query (every route x method x documented parameter, plus an undocumented one):
  NUL characters, percent-encoded bytes that are not UTF-8 and an over-long query string
  are refused at the edge (400/414) on every method; 10,000-character values and values of
  the wrong type reach the views of GET routes;
* in the path, in place of every path parameter: NUL, bytes that are not UTF-8, 10,000
  characters, numbers that overflow, words;
* in JSON bodies (every POST, PUT and PATCH): nested past the limit, the wrong type for
  the whole body, and the wrong type, 10,000 characters, a NUL or deep nesting in each
  field of a valid body;
* the dashboard's pages (frontend/) with the same query values;
* the real ASGI server (uvicorn, started with the options of docs/operations.md) for a
  100 KB query string, which it must hand to Django for the 414 instead of answering a
  plain-text 400 itself.

Every answer is below 500; every 4xx of the API carries ``{detail, error_type,
correlation_id, timestamp}``; and a rejected request wrote no row (PostgreSQL's own count of
rows inserted, updated and deleted in the test's transaction, which the in-process client
shares, is unchanged). Failures are collected and reported together.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import URLPattern, get_resolver
from drf_spectacular.generators import SchemaGenerator

from agentflow.models import Run
from hitl.services import request_review
from tenants import services
from tenants.models import APIKey, Role
from tests.platform.api.conftest import ACTOR, Persona, make_agent
from tests.platform.api.test_bad_input import ERROR_KEYS
from tests.platform.api.test_outsiders import (
    _PARAM,
    BODIES,
    BODY_METHODS,
    ENDPOINTS,
    OWNER_ID,
    SIGNATURE_AUTHENTICATED,
    Endpoint,
    World,
    _missing_ids,
    _walk,
    world,
)

pytestmark = pytest.mark.slow

__all__ = ["world"]  # the outsider suite's fixture: the owner's objects of every kind

ROOT = Path(__file__).resolve().parents[3]
# The web process's uvicorn options for long request lines (docs/operations.md): the h11
# protocol with a 1 MiB request-head buffer, so Django answers over-long query strings.
# (httptools refuses URLs over 64 KiB itself, with a plain-text 400.)
UVICORN_EDGE_OPTIONS = ("--http", "h11", "--h11-max-incomplete-event-size", "1048576")
TOO_LONG = "x" * (getattr(settings, "MAX_QUERY_STRING_BYTES", 16384) + 1)
# Refused by the middleware before any view: (value, status, error_type).
EDGE_VALUES: dict[str, tuple[str, int, str]] = {
    "nul": ("%00", 400, "malformed_request"),
    "nul-inside": ("a%00b", 400, "malformed_request"),
    "invalid-utf8": ("%ff%fe", 400, "malformed_request"),
    "truncated-utf8": ("caf%c3", 400, "malformed_request"),
    "too-long": (TOO_LONG, 414, "uri_too_long"),
}
# Reach the views (GET only: a write with them could be valid and write).
VIEW_VALUES: dict[str, str] = {
    "10k-chars": "y" * 10_000,
    "word": "abc",
    "negative": "-1",
    "overflow": "9" * 30,
    "huge-float": "1e999",
    "bad-date": "2026-13-45T25:61:00",
    "empty": "",
    "control-and-emoji": "%01%1b%F0%9F%92%A9",
}
PATH_VALUES: dict[str, str] = {
    "nul": "%00",
    "invalid-utf8": "%ff%fe",
    "10k-chars": "z" * 10_000,
    "overflow": "99999999999999999999",
    "negative": "-1",
}
UNDOCUMENTED = "x_undocumented"
# Reads that write an audit event when they succeed (a data export is itself audited).
AUDITED_READS = frozenset({"governance-export"})
DEEP = 10_000
# A body field's hostile replacements.
FIELD_VALUES: dict[str, Any] = {
    "list": [],
    "object": {},
    "null": None,
    "10k-chars": "w" * 10_000,
    "nul": "a\u0000b",
    "deep": "DEEP",  # replaced by raw nested JSON (deeper than the limit)
}
WHOLE_BODIES: dict[str, str] = {
    "deep-array": "[" * DEEP + "]" * DEEP,
    "deep-object": '{"a":' * DEEP + "1" + "}" * DEEP,
    "array": "[]",
    "string": '"x"',
    "just-past-the-limit": "[" * 65 + "]" * 65,
}
# The query parameters each dashboard page reads (its filter form, paging, fragments,
# redirect target); every page also gets "fragment" and an undocumented name.
DASHBOARD_PARAMS: dict[str, tuple[str, ...]] = {
    "runs/": ("status", "agent", "since", "page"),
    "audit/": ("action", "actor", "target", "since", "until", "page"),
    "learning/": ("show",),
    "login/": ("next",),
    "tenant/select/": ("next",),
}
DASHBOARD_VIEW_VALUES = ("10k-chars", "word", "overflow", "bad-date", "control-and-emoji")


# --- the routes and their query parameters ------------------------------------------------


def _schema_path(route: str) -> str:
    return "/" + _PARAM.sub(lambda m: "{" + m.group("name") + "}", route)


def documented_query_params() -> dict[tuple[str, str], list[str]]:
    """(schema path, method) -> its query parameter names, from the OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found: dict[tuple[str, str], list[str]] = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found[(path, method.upper())] = names
    return found


def _query_params(endpoint: Endpoint, documented: dict[tuple[str, str], list[str]]) -> list[str]:
    method = "GET" if endpoint.method == "HEAD" else endpoint.method
    return [*documented.get((_schema_path(endpoint.route), method), []), UNDOCUMENTED]


def dashboard_routes() -> list[str]:
    """Every page route outside the API, admin and schema (GET), from the URL conf."""
    return [
        route
        for route, pattern in _walk(get_resolver())
        if isinstance(pattern, URLPattern)
        and not route.startswith(("api/", "admin/"))
        and route not in ("metrics",)
    ]


# --- the world and the checks -------------------------------------------------------------


@dataclass
class Sweep:
    """Calls with a hostile part, and what went wrong, collected over the whole sweep."""

    world: World | None
    staff: Client
    failures: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    calls: int = 0

    def client_and_headers(self, endpoint: Endpoint) -> tuple[Client, dict[str, str]]:
        assert self.world is not None
        if endpoint.is_platform:
            return self.staff, {}
        if endpoint.name in SIGNATURE_AUTHENTICATED:
            return Client(raise_request_exception=False), {}
        return self.world.owner.client, {"Authorization": f"Bearer {self.world.owner.key}"}

    def check(
        self,
        label: str,
        call: Callable[[], Any],
        *,
        expect: tuple[int, str] | None = None,
        api: bool = True,
        writes_allowed_on_success: bool = False,
    ) -> None:
        self.calls += 1
        before = rows_written()
        try:
            response = call()
        except Exception as exc:
            self.server_errors.append(f"{label}: raised {type(exc).__name__}: {str(exc)[:200]}")
            return
        written = rows_written() - before
        status = response.status_code
        if status >= 500:
            self.server_errors.append(f"{label}: {status} {response.content[:200]!r}")
            return
        if expect is not None and status != expect[0]:
            self.failures.append(f"{label}: {status}, expected {expect[0]}")
        if written and not (writes_allowed_on_success and status < 400):
            self.failures.append(f"{label}: answered {status} but wrote {written} row(s)")
        if status >= 400 and response.request["REQUEST_METHOD"] != "HEAD" and api:
            problem = error_shape_problem(response, expect[1] if expect else None)
            if problem:
                self.failures.append(f"{label}: {status} {problem}")

    def report(self) -> None:
        """All failures at once, the 5xx first."""
        failures = self.server_errors + self.failures
        assert not failures, (
            f"{len(failures)} of {self.calls} calls failed, {len(self.server_errors)} with a "
            "5xx:\n" + "\n".join(failures[:60])
        )


def rows_written() -> int:
    """Rows inserted, updated or deleted so far in this transaction (the test's, which the
    in-process client's requests share): one query, every table. Updates of API keys are
    left out: authenticating stamps a key's last use (at most once a minute)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_del"
            " + CASE WHEN relname = %s THEN 0 ELSE n_tup_upd END), 0)"
            " FROM pg_stat_xact_user_tables",
            [APIKey._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def error_shape_problem(response: Any, error_type: str | None) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"is not JSON: {response.content[:120]!r}"
    if not isinstance(body, dict) or not body.keys() >= ERROR_KEYS:
        return f"lacks the error fields: {str(body)[:160]}"
    if body["correlation_id"] != response.get("X-Correlation-ID"):
        return "correlation id differs from the header"
    if error_type is not None and body["error_type"] != error_type:
        return f"error_type {body['error_type']!r}, expected {error_type!r}"
    return None


@pytest.fixture
def sweep(world: World) -> Sweep:
    staff = get_user_model().objects.create_user("sweep-staff", is_staff=True)
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    owner = world.owner
    world.owner = Persona(owner.tenant, owner.key, Client(raise_request_exception=False))
    # Thousands of calls in a minute: no rate limit may answer in the views' place.
    unlimited = {"requests_per_minute": 10**9, "requests_per_minute_per_key": 10**9}
    services.update_quotas(actor=ACTOR, tenant=owner.tenant, tier=None, overrides=unlimited)
    return Sweep(world, client)


def _send(
    client: Client, method: str, path: str, headers: dict[str, str], body: str | None = None
) -> Any:
    return client.generic(
        method,
        path,
        body or "",
        content_type="application/json",
        headers={"Prefer": "respond-async", **headers},
    )


def _ids(endpoint: Endpoint, world: World | None) -> dict[str, str]:
    """The owner's real ids (so the views run to the end); an id that exists nowhere for a
    parameter the outsider suite has no source for yet (it fails there, not here)."""
    assert world is not None
    missing = _missing_ids(endpoint)
    return {
        name: OWNER_ID[name](world) if name in OWNER_ID else missing[name]
        for name in endpoint.params
    }


# --- the sweeps ---------------------------------------------------------------------------


def test_hostile_input_on_every_api_route(sweep: Sweep) -> None:
    """The query, path and body sweeps below, on one set of the owner's objects."""
    sweep_queries(sweep)
    sweep_paths(sweep)
    sweep_bodies(sweep)
    sweep.report()


def sweep_queries(sweep: Sweep) -> None:
    """Every route x method x query parameter (documented, and one undocumented) x NUL,
    non-UTF-8 and over-long values (refused at the edge: 400/414 on every method), and on
    GET routes x every documented parameter x 10,000 characters and wrong types (reaching
    the views)."""
    documented = documented_query_params()
    endpoints = [e for e in ENDPOINTS if e.method != "OPTIONS"]
    assert len(endpoints) >= 80
    for endpoint in endpoints:
        client, headers = sweep.client_and_headers(endpoint)
        path = endpoint.path(_ids(endpoint, sweep.world))
        names = _query_params(endpoint, documented)
        for name in names:
            # The edge refuses whatever the name: a documented one and an undocumented one.
            if name in (names[0], UNDOCUMENTED):
                for label, (value, status, error_type) in EDGE_VALUES.items():
                    sweep.check(
                        f"{endpoint} ?{name}={label}",
                        partial(_send, client, endpoint.method, f"{path}?{name}={value}", headers),
                        expect=(status, error_type),
                    )
            if endpoint.method != "GET" or name == UNDOCUMENTED:
                continue
            for label, value in VIEW_VALUES.items():
                sweep.check(
                    f"{endpoint} ?{name}={label}",
                    partial(_send, client, endpoint.method, f"{path}?{name}={value}", headers),
                    writes_allowed_on_success=endpoint.name in AUDITED_READS,
                )
        # A NUL in a parameter's name is refused too.
        sweep.check(
            f"{endpoint} ?%00=1",
            partial(_send, client, endpoint.method, f"{path}?%00=1", headers),
            expect=(400, "malformed_request"),
        )


def sweep_paths(sweep: Sweep) -> None:
    """Every route with path parameters x method x each parameter replaced by NUL, bytes
    that are not UTF-8, 10,000 characters, an overflowing number and a negative one."""
    endpoints = [e for e in ENDPOINTS if e.params]
    for endpoint in endpoints:
        client, headers = sweep.client_and_headers(endpoint)
        ids = _ids(endpoint, sweep.world)
        body = json.dumps(BODIES.get((endpoint.name, endpoint.method), {}))
        for name in endpoint.params:
            for label, value in PATH_VALUES.items():
                path = endpoint.path({**ids, name: value})
                sweep.check(
                    f"{endpoint} {name}={label}",
                    partial(_send, client, endpoint.method, path, headers, body),
                )


def _hostile_bodies(valid: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield from WHOLE_BODIES.items()
    deep = "[" * DEEP + "]" * DEEP
    for name in valid:
        for label, value in FIELD_VALUES.items():
            text = json.dumps({**valid, name: value})
            if value == "DEEP":
                text = text.replace('"DEEP"', deep)
            yield f"{name}={label}", text


def sweep_bodies(sweep: Sweep) -> None:
    """Every POST, PUT and PATCH x whole bodies nested 10,000 levels (arrays and objects)
    and one level past the limit, an array and a string, and each field of a valid body
    replaced by a list, an object, null, 10,000 characters, a
    NUL and deep nesting. A rejected body writes nothing; an accepted one may."""
    endpoints = [e for e in ENDPOINTS if e.method in BODY_METHODS]
    assert len(endpoints) >= 25
    for endpoint in endpoints:
        client, headers = sweep.client_and_headers(endpoint)
        path = endpoint.path(_ids(endpoint, sweep.world))
        for label, text in _hostile_bodies(BODIES.get((endpoint.name, endpoint.method), {})):
            sweep.check(
                f"{endpoint} body {label}",
                partial(_send, client, endpoint.method, path, headers, text),
                writes_allowed_on_success=True,
            )


@pytest.fixture
def dashboard(owner: Persona) -> tuple[Sweep, dict[str, str], Client]:
    """The owner's agent, a run and its review; a signed-in owner and platform staff."""
    agent = make_agent(owner)
    run = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "sweep-customer", "message": "Where is my invoice?"},
        headers={"Prefer": "respond-async"},
    ).json()
    review = request_review(
        run=Run.unscoped.get(pk=run["id"]), result={"intent": "BILLING"}, actor=ACTOR
    )
    member = get_user_model().objects.create_user("sweep-owner")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=member, role=Role.OWNER)
    staff = get_user_model().objects.create_user("sweep-staff", is_staff=True)
    clients = []
    for user in (member, staff):
        client = Client(raise_request_exception=False)
        client.force_login(user)
        clients.append(client)
    ids = {
        "run_id": run["id"],
        "session_id": run["session_id"],
        "request_id": str(review.pk),
        "agent_id": str(agent.pk),
        "tenant_id": str(owner.tenant.pk),
        "blueprint": "triage_agent",
        # Pages of objects this sweep does not make: a 404 each, never a 5xx.
        "event_id": str(uuid.uuid4()),
        "rule_id": str(uuid.uuid4()),
        "policy_id": "1",
    }
    return Sweep(None, clients[1]), ids, clients[0]


def test_dashboard_pages_never_500_on_hostile_queries(
    dashboard: tuple[Sweep, dict[str, str], Client],
) -> None:
    """Every dashboard page, signed in as the tenant's owner and as platform staff, x its
    query parameter names (filters, paging, fragments, next) x the edge values (400/414
    in the error shape, on one name) and the values that reach the views (any non-5xx
    page, nothing written)."""
    sweep, ids, owner = dashboard
    routes = dashboard_routes()
    assert "runs/<uuid:run_id>/" in routes
    for route in routes:
        path = "/" + _PARAM.sub(lambda m: ids[m.group("name")], route)
        # Platform pages are the staff's; the others the tenant owner's.
        who, client = ("staff", sweep.staff) if route.startswith("tenants/") else ("owner", owner)
        for label, (value, status, error_type) in EDGE_VALUES.items():
            sweep.check(
                f"{who} GET /{route} ?status={label}",
                partial(client.get, f"{path}?status={value}"),
                expect=(status, error_type),
            )
        for name in (*DASHBOARD_PARAMS.get(route, ()), "fragment", UNDOCUMENTED):
            for label in DASHBOARD_VIEW_VALUES:
                sweep.check(
                    f"{who} GET /{route} ?{name}={label}",
                    partial(client.get, f"{path}?{name}={VIEW_VALUES[label]}"),
                    api=False,
                )
    sweep.report()


# --- the real ASGI server -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raw_request(port: int, target: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET with ``target`` sent as is (no client library re-encodes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return int(status_line.split()[1]), headers, body


def _unchunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


@pytest.fixture
def live_port(django_db_setup: None) -> Iterator[int]:
    """The ASGI app under uvicorn with the web process's edge options, on the test database."""
    port = _free_port()
    parts = urlsplit(os.environ["DATABASE_URL"])
    database = urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))
    env = {**os.environ, "DATABASE_URL": database, "PYTHONWARNINGS": "ignore"}
    env["DJANGO_SETTINGS_MODULE"] = "agentflow.server.settings"
    argv = [sys.executable, "-m", "uvicorn", "agentflow.server.asgi:application"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"]
    argv += ["--no-access-log", *UVICORN_EDGE_OPTIONS]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if _raw_request(port, b"/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "uvicorn not up in 60 s"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def _error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type") == "application/json", (status, headers, body[:200])
    parsed: dict[str, Any] = json.loads(body)
    assert parsed.keys() >= ERROR_KEYS, parsed
    assert parsed["correlation_id"] == headers["x-correlation-id"]
    return parsed


def test_the_asgi_server_hands_hostile_request_lines_to_django(live_port: int) -> None:
    """Through uvicorn: a 100 KB query string is Django's 414 in the error shape (not the
    server's plain-text 400); a NUL and bytes that are not UTF-8 in the query and in the
    path are 400 malformed_request; a raw (unencoded) non-UTF-8 byte is no 5xx."""
    status, headers, body = _raw_request(live_port, b"/api/v1/agents?q=" + b"x" * 100_000)
    assert status == 414, (status, body[:200])
    assert _error(status, headers, body)["error_type"] == "uri_too_long"
    for target in (
        b"/api/v1/activity?kind=%00",
        b"/api/v1/graph/nodes?q=a%00b",
        b"/api/v1/agents?sort_by=%ff%fe",
        b"/api/v1/agents/%00",
        b"/api/v1/agents/%ff%fe",
        b"/runs/?status=%00",
    ):
        status, headers, body = _raw_request(live_port, target)
        assert status == 400, (target, status, body[:200])
        assert _error(status, headers, body)["error_type"] == "malformed_request", target
    status, _, body = _raw_request(live_port, b"/api/v1/agents?q=\xff\xfe")
    assert 400 <= status < 500, (status, body[:200])
