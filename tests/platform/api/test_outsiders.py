"""Every endpoint under /api/v1/, called by someone who must not reach the owner's data.

The endpoints are enumerated from the URL conf, so an endpoint added later is covered (or
fails here loudly) without anyone remembering to add a test (ARCHITECTURE habits 1 and 9):

* tenant endpoints, called by the OUTSIDER's key with the OWNER's ids in the path: 404
  with the error body, nothing of the owner's in the response, and the very same bytes as
  for ids that do not exist at all (no existence oracle);
* platform-admin endpoints (``/api/v1/tenants...``), called with a tenant API key (the
  outsider's and the owner's own) and by a signed-in non-staff user: 401/403, never 2xx;
* nothing of the owner's tenant is written by any of these calls.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter, StringConverter, UUIDConverter

from agentflow import knowledge
from agentflow.models import Agent, KnowledgeDocument, Run
from governance import invitations
from hitl.services import request_review
from tenants import services
from tenants.context import tenant_scope
from tenants.models import APIKey, Membership, Role, Tenant
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona, make_agent
from tests.platform.api.test_bad_input import (
    assert_error,
    assert_field_errors,
    lenient,
    nothing_written,
)
from tests.platform.learning.world import GOLDEN_QUESTION, owner_integrations

API_PREFIX = "api/v1/"
PLATFORM_PREFIX = "api/v1/tenants"
IMPLICIT_METHODS = ("head", "options", "trace")
CORRELATION_ID = "outsider-probe-0001"
_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
_TIMESTAMP = re.compile(rb'"timestamp": ?"[^"]+"')


@dataclass(frozen=True)
class Endpoint:
    route: str  # as in the URL conf, e.g. "api/v1/agents/<uuid:agent_id>"
    name: str
    method: str
    params: tuple[str, ...]
    converters: Mapping[str, object]

    def __str__(self) -> str:
        return f"{self.method} /{self.route}"

    @property
    def is_platform(self) -> bool:
        return self.route.startswith(PLATFORM_PREFIX)

    def path(self, ids: Mapping[str, str]) -> str:
        return "/" + _PARAM.sub(lambda m: ids[m.group("name")], self.route)


def _walk(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def api_endpoints() -> list[Endpoint]:
    """Every (route, method) under /api/v1/ that the URL conf serves, with its path params."""
    found: list[Endpoint] = []
    for route, pattern in _walk(get_resolver()):
        if not route.startswith(API_PREFIX):
            continue
        view_class = getattr(pattern.callback, "view_class", None)
        if view_class is None:
            raise AssertionError(f"/{route} is a function view: list its methods here")
        methods = [
            name.upper()
            for name in view_class.http_method_names
            if name not in IMPLICIT_METHODS and hasattr(view_class, name)
        ]
        if "GET" in methods:
            methods.append("HEAD")  # Django answers HEAD with the GET handler
        methods.append("OPTIONS")
        params = tuple(m.group("name") for m in _PARAM.finditer(route))
        converters = dict(pattern.pattern.converters)
        for method in methods:
            found.append(Endpoint(route, pattern.name or route, method, params, converters))
    return found


ENDPOINTS = api_endpoints()
# Webhook deliveries authenticate by the provider's signature, not by key or session: a
# delivery signed with another tenant's secret, or for an unknown endpoint, is the same 401
# (tests/platform/learning/test_signatures.py), so they are left out of the 404 tests here.
SIGNATURE_AUTHENTICATED = frozenset(
    f"webhook-delivery-{provider}" for provider in ("zendesk", "slack", "jira", "generic")
)
# A signed-in person acting for themselves, in no tenant yet (accepting an invitation):
# sessions only, never a tenant's key; tested on their own below.
PERSONAL = frozenset({"governance-invitation-accept"})
TENANT_ENDPOINTS = [
    e
    for e in ENDPOINTS
    if not e.is_platform and e.name not in SIGNATURE_AUTHENTICATED and e.name not in PERSONAL
]
PLATFORM_ENDPOINTS = [e for e in ENDPOINTS if e.is_platform]


@dataclass
class World:
    """The owner's objects (one of each kind an API path can name) and the outsider."""

    owner: Persona
    outsider: Persona
    agent: Agent
    run_id: str
    session_id: str
    document: KnowledgeDocument
    key: APIKey
    outsider_agent: Agent
    secrets: tuple[str, ...]  # strings of the owner's that must never reach the outsider
    review_id: str = ""  # the owner's HITL review request (of the run above)
    invitation_id: str = ""  # the owner's pending invitation (of a person not yet a member)
    invitation_token: str = ""
    member: str = ""  # the username of a member of the owner's tenant
    # The owner's webhook endpoint, event rule, activity event and graph node, by path param.
    integrations: dict[str, str] = field(default_factory=dict)


# How to get the owner's id for each path parameter name. A route with a parameter that
# is not here fails the tests below: add how to obtain the owner's object for it.
OWNER_ID: dict[str, Callable[[World], str]] = {
    "agent_id": lambda w: str(w.agent.pk),
    "run_id": lambda w: w.run_id,
    "session_id": lambda w: w.session_id,
    "document_id": lambda w: str(w.document.pk),
    "tenant_id": lambda w: str(w.owner.tenant.pk),
    "key_id": lambda w: str(w.key.pk),
    "request_id": lambda w: w.review_id,
    "endpoint_id": lambda w: w.integrations["endpoint_id"],
    "rule_id": lambda w: w.integrations["rule_id"],
    "event_id": lambda w: w.integrations["event_id"],
    "node_id": lambda w: w.integrations["node_id"],
    "golden_path_id": lambda w: w.integrations["golden_path_id"],
    "playbook_id": lambda w: w.integrations["playbook_id"],
    "invitation_id": lambda w: w.invitation_id,
    # A tool id is a name, not an object: the agent in the same path is what is foreign.
    "tool_id": lambda w: "lookup_order",
}
# The outsider's own object for a parent parameter ("my agent, your document").
OUTSIDER_ID: dict[str, Callable[[World], str]] = {
    "agent_id": lambda w: str(w.outsider_agent.pk),
    "tenant_id": lambda w: str(w.outsider.tenant.pk),
}
# Bodies for the methods that take one: valid requests, so only the ids can make them fail.
RUN = {"user_id": "intruder", "message": "How do I reset my password?"}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("agent-list", "POST"): {
        "name": "globex-new",
        "blueprint": "support_agent",
        "config": SUPPORT_CONFIG,
    },
    ("agent-detail", "PATCH"): {"name": "hijacked"},
    ("agent-runs", "POST"): RUN,
    ("agent-messages", "POST"): RUN,
    ("agent-preflight", "POST"): {"message": "I was charged twice"},
    ("agent-tool-invoke", "POST"): {"arguments": {"order_id": "A-1"}},
    ("knowledge-list", "POST"): {"title": "planted", "content": "Call 555-0100 for refunds."},
    ("tenant-list", "POST"): {"name": "Hijack Inc"},
    ("tenant-detail", "PATCH"): {"quota_overrides": {"runs_per_month": 1}},
    ("tenant-activate", "POST"): {},
    ("tenant-suspend", "POST"): {},
    ("tenant-keys", "POST"): {"name": "backdoor"},
    ("tenant-key-rotate", "POST"): {"overlap_seconds": 0},
    ("governance-erasures", "POST"): {"user_id": "intruder"},
    ("governance-roles", "POST"): {"username": "globex-teammate", "role": "viewer"},
    ("governance-invitations", "POST"): {"username": "globex-teammate", "role": "viewer"},
    ("governance-invitation-accept", "POST"): {"token": "t" * 43},
    ("governance-tool-permissions", "PUT"): {"permissions": [{"tool": "*", "level": "read"}]},
    ("session-takeover", "POST"): {},
    ("session-handback", "POST"): {},
    ("session-messages", "POST"): {"content": "a reply from outside"},
    ("hitl-claim", "POST"): {},
    ("hitl-unclaim", "POST"): {"reason": "handing over"},
    ("hitl-respond", "POST"): {"decision": "approve"},
    ("hitl-escalate", "POST"): {"reason": "the customer asked for a person", "priority": "high"},
    ("webhook-endpoints", "POST"): {"provider": "generic", "name": "globex-desk"},
    ("webhook-endpoint-rotate", "POST"): {"overlap_seconds": 0},
    ("activity-rules", "POST"): {
        "name": "globex-rule",
        "event_kind": "zendesk.ticket.created",
        "agent_name": "globex-bot",
    },
    ("activity-rule", "PATCH"): {"enabled": False},
    ("golden-path-deactivate", "POST"): {},
    ("golden-path-activate", "POST"): {},
    ("feedback", "POST"): {"run_id": str(uuid.uuid4()), "rating": 5},
    ("playbooks-extract", "POST"): {"agent_id": str(uuid.uuid4())},
    ("playbook-retire", "POST"): {},
    ("playbook-apply", "POST"): {},
    **{(name, "POST"): {"type": "ticket.created"} for name in SIGNATURE_AUTHENTICATED},
}
BODY_METHODS = ("POST", "PUT", "PATCH")
# Collections that need a query string, as the outsider would call them.
COLLECTION_QUERIES: dict[str, Callable[[World], str]] = {
    "golden-paths-search": lambda w: "?" + urlencode({"q": GOLDEN_QUESTION}),
    "playbooks-suggest": lambda w: (
        "?" + urlencode({"agent_id": str(w.outsider_agent.pk), "category": "BILLING"})
    ),
}
# Collections whose body names an object: the outsider names the owner's, and must get the
# 422 "unknown" a missing id gets, naming the field.
FOREIGN_IN_BODY: dict[tuple[str, str], tuple[str, Callable[[World], dict[str, Any]]]] = {
    ("feedback", "POST"): ("run_id", lambda w: {"run_id": w.run_id, "rating": 5}),
    ("playbooks-extract", "POST"): ("agent_id", lambda w: {"agent_id": str(w.agent.pk)}),
    # Issue 13.6: the owner's member is no more the outsider's to promote than a stranger.
    ("governance-roles", "POST"): ("username", lambda w: {"username": w.member, "role": "owner"}),
}


def _ids(endpoint: Endpoint, world: World) -> dict[str, str]:
    unknown = [p for p in endpoint.params if p not in OWNER_ID]
    if unknown:
        pytest.fail(f"{endpoint}: no OWNER_ID entry for path parameter(s) {unknown}")
    return {p: OWNER_ID[p](world) for p in endpoint.params}


def _missing_ids(endpoint: Endpoint) -> dict[str, str]:
    ids = {}
    for name in endpoint.params:
        converter = endpoint.converters[name]
        if isinstance(converter, UUIDConverter):
            ids[name] = str(uuid.uuid4())
        elif isinstance(converter, IntConverter):
            ids[name] = "2147000000"
        elif isinstance(converter, StringConverter):
            ids[name] = "no-such-name"
        else:
            pytest.fail(f"{endpoint}: no missing-id rule for converter {type(converter).__name__}")
    return ids


def _body(endpoint: Endpoint) -> dict[str, Any] | None:
    if endpoint.method not in BODY_METHODS:
        return None
    if (endpoint.name, endpoint.method) not in BODIES:
        pytest.fail(f"{endpoint}: add a valid request body to BODIES[({endpoint.name!r}, ...)]")
    return BODIES[(endpoint.name, endpoint.method)]


def call(
    client: Client,
    endpoint: Endpoint,
    path: str,
    headers: Mapping[str, str],
    body: dict[str, Any] | None = None,
) -> Any:
    body = body if body is not None else _body(endpoint)
    return client.generic(
        endpoint.method,
        path,
        json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers={"X-Correlation-ID": CORRELATION_ID, "Prefer": "respond-async", **headers},
    )


def _key_headers(persona: Persona) -> dict[str, str]:
    return {"Authorization": f"Bearer {persona.key}"}


def _assert_nothing_of_the_owner(response: Any, world: World) -> None:
    text = response.content.decode("utf-8", "replace") + json.dumps(dict(response.items()))
    leaked = [secret for secret in world.secrets if secret in text]
    assert not leaked, f"the outsider saw the owner's {leaked}"


def _normalised(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((name, value) for name, value in response.items())
    return response.status_code, headers, _TIMESTAMP.sub(b'"timestamp":"T"', response.content)


@pytest.fixture
def world(owner: Persona, outsider: Persona) -> World:
    agent = make_agent(owner, name="acme-internal-bot")
    with tenant_scope(owner.tenant.pk):
        document = knowledge.ingest_document(
            agent=agent,
            title="Acme pricing playbook 2026",
            content_type="text/markdown",
            text="Enterprise discount ceiling is 37 percent.",
        )
    run = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "acme-customer-8841", "message": "Where is invoice INV-20931?"},
        headers={"Prefer": "respond-async"},
    ).json()
    key = APIKey.unscoped.get(tenant=owner.tenant)
    review = request_review(
        run=Run.unscoped.get(pk=run["id"]),
        result={"intent": "BILLING", "proposed_answer": "INV-20931 is on the Billing page."},
        actor=ACTOR,
    )
    integrations, integration_secrets = owner_integrations(owner, agent)
    member = get_user_model().objects.create_user("acme-operator")
    services.add_member(actor=ACTOR, tenant=owner.tenant, user=member, role=Role.OPERATOR)
    invited = invitations.invite_member(
        actor=ACTOR, tenant=owner.tenant, role=Role.VIEWER, username="acme-invitee"
    )
    secrets = (
        *integration_secrets,
        str(agent.pk),
        agent.name,
        run["id"],
        run["session_id"],
        str(document.pk),
        document.title,
        "acme-customer-8841",
        "INV-20931",
        owner.tenant.name,
        key.prefix,
        str(review.pk),
    )
    return World(
        owner=owner,
        outsider=lenient(outsider),
        agent=agent,
        run_id=run["id"],
        session_id=run["session_id"],
        document=document,
        key=key,
        outsider_agent=make_agent(outsider, name="globex-bot"),
        secrets=secrets,
        review_id=str(review.pk),
        integrations=integrations,
        invitation_id=str(invited.invitation.pk),
        invitation_token=invited.token,
        member=member.get_username(),
    )


def test_the_url_conf_is_enumerated() -> None:
    """The walk finds the API (so the parametrised tests below are not vacuous) and every
    path parameter has a source for the owner's id."""
    names = {str(e) for e in ENDPOINTS}
    assert "GET /api/v1/agents/<uuid:agent_id>" in names
    assert "DELETE /api/v1/agents/<uuid:agent_id>/knowledge/<uuid:document_id>" in names
    assert "POST /api/v1/tenants/<int:tenant_id>/keys/<int:key_id>/rotate" in names
    assert len(TENANT_ENDPOINTS) >= 30
    assert len(PLATFORM_ENDPOINTS) >= 20
    params = {p for e in ENDPOINTS for p in e.params}
    assert params <= OWNER_ID.keys(), f"add OWNER_ID entries for {params - OWNER_ID.keys()}"
    bodies = {(e.name, e.method) for e in ENDPOINTS if e.method in BODY_METHODS}
    assert bodies <= BODIES.keys(), f"add BODIES entries for {bodies - BODIES.keys()}"


@pytest.mark.parametrize(
    "endpoint", [e for e in TENANT_ENDPOINTS if e.params and e.method != "OPTIONS"], ids=str
)
def test_foreign_ids_are_404_like_missing_ones(endpoint: Endpoint, world: World) -> None:
    """The outsider's key with the owner's ids: 404 with the error body, none of the
    owner's data, byte-identical to the 404 for ids that exist nowhere; with the
    outsider's own parent and the owner's child id ("my agent, your document") too."""
    auth = _key_headers(world.outsider)
    variants = {"foreign": _ids(endpoint, world), "missing": _missing_ids(endpoint)}
    if len(endpoint.params) > 1 and endpoint.params[0] in OUTSIDER_ID:
        mixed = dict(variants["foreign"])
        mixed[endpoint.params[0]] = OUTSIDER_ID[endpoint.params[0]](world)
        variants["own-parent"] = mixed
    with nothing_written(world.owner.tenant):
        responses = {
            label: call(world.outsider.client, endpoint, endpoint.path(ids), auth)
            for label, ids in variants.items()
        }
    for label, response in responses.items():
        if endpoint.method == "HEAD":
            assert response.status_code == 404, (label, response.status_code)
        else:
            assert assert_error(response, 404, "not_found")["detail"] == "Not found.", label
        _assert_nothing_of_the_owner(response, world)
    reference = _normalised(responses["missing"])
    for label, response in responses.items():
        assert _normalised(response) == reference, f"{label} differs from a missing id"


@pytest.mark.parametrize(
    "endpoint", [e for e in TENANT_ENDPOINTS if e.method == "OPTIONS"], ids=str
)
def test_options_reveals_nothing_about_foreign_ids(endpoint: Endpoint, world: World) -> None:
    """OPTIONS describes the endpoint without looking the object up: the same answer for
    the owner's ids as for missing ones, and none of the owner's data."""
    auth = _key_headers(world.outsider)
    with nothing_written(world.owner.tenant):
        foreign = call(world.outsider.client, endpoint, endpoint.path(_ids(endpoint, world)), auth)
        missing = call(world.outsider.client, endpoint, endpoint.path(_missing_ids(endpoint)), auth)
    _assert_nothing_of_the_owner(foreign, world)
    assert _normalised(foreign) == _normalised(missing)


@pytest.mark.parametrize(
    "endpoint", [e for e in TENANT_ENDPOINTS if not e.params and e.method != "OPTIONS"], ids=str
)
def test_collections_show_the_outsider_only_its_own_data(endpoint: Endpoint, world: World) -> None:
    """Lists, usage, blueprints and agent creation by the outsider: 2xx, none of the
    owner's data, and nothing of the owner's written."""
    auth = _key_headers(world.outsider)
    foreign = FOREIGN_IN_BODY.get((endpoint.name, endpoint.method))
    query = COLLECTION_QUERIES.get(endpoint.name, lambda w: "")(world)
    with nothing_written(world.owner.tenant):
        if foreign is not None:
            field_name, body = foreign
            response = call(
                world.outsider.client, endpoint, endpoint.path({}), auth, body=body(world)
            )
        else:
            response = call(world.outsider.client, endpoint, endpoint.path({}) + query, auth)
    _assert_nothing_of_the_owner(response, world)
    if foreign is not None:
        # The owner's object named in the body is as unknown as a missing one.
        assert_field_errors(response, field_name)
        return
    assert 200 <= response.status_code < 300, (response.status_code, response.content[:300])


@pytest.mark.parametrize(
    "endpoint", [e for e in TENANT_ENDPOINTS if e.params and e.method == "GET"], ids=str
)
def test_the_owner_reaches_what_the_outsider_cannot(endpoint: Endpoint, world: World) -> None:
    """Control for the 404s above: the owner's own key finds each of those objects."""
    response = call(
        world.owner.client,
        endpoint,
        endpoint.path(_ids(endpoint, world)),
        _key_headers(world.owner),
    )
    assert response.status_code in (200, 303, 409), (response.status_code, response.content[:300])


def _non_staff_member(tenant: Tenant) -> Client:
    """A signed-in dashboard user who owns ``tenant`` but is not platform staff."""
    user = get_user_model().objects.create_user(f"owner-of-{tenant.slug}")
    services.add_member(actor=ACTOR, tenant=tenant, user=user, role=Role.OWNER)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.parametrize("endpoint", PLATFORM_ENDPOINTS, ids=str)
def test_platform_endpoints_refuse_tenant_credentials(endpoint: Endpoint, world: World) -> None:
    """The outsider's API key, the owner's own API key and a signed-in non-staff user (an
    owner of the outsider's tenant), each with the owner's tenant and key ids and with
    missing ids: 401/403 with the error body, never 2xx; no tenant, key or state changes."""
    callers = {
        "outsider-key": (world.outsider.client, _key_headers(world.outsider)),
        "owner-key": (lenient(world.owner).client, _key_headers(world.owner)),
        "non-staff-session": (_non_staff_member(world.outsider.tenant), {}),
    }
    tenants_before = list(Tenant.objects.order_by("pk").values_list("pk", "status", "tier"))
    with nothing_written(world.owner.tenant, world.outsider.tenant):
        for caller, (client, headers) in callers.items():
            foreign = call(client, endpoint, endpoint.path(_ids(endpoint, world)), headers)
            missing = call(client, endpoint, endpoint.path(_missing_ids(endpoint)), headers)
            for response in (foreign, missing):
                assert response.status_code in (401, 403), (caller, response.status_code)
                if endpoint.method != "HEAD":
                    assert_error(response, response.status_code)
                _assert_nothing_of_the_owner(response, world)
            assert _normalised(foreign) == _normalised(missing), caller
    assert list(Tenant.objects.order_by("pk").values_list("pk", "status", "tier")) == tenants_before


@pytest.mark.parametrize("endpoint", [e for e in PLATFORM_ENDPOINTS if e.method == "GET"], ids=str)
def test_platform_staff_reach_the_owners_tenant(endpoint: Endpoint, world: World) -> None:
    """Control for the refusals above: a staff session gets 200 with the same ids."""
    staff = get_user_model().objects.create_user("platform-staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    response = call(client, endpoint, endpoint.path(_ids(endpoint, world)), {})
    assert response.status_code == 200, response.content[:300]


def test_the_outsiders_agent_is_not_reachable_by_the_owner_either(world: World) -> None:
    """Isolation is symmetric: the owner's key on the outsider's agent is a 404 too."""
    response = lenient(world.owner).get(f"/api/v1/agents/{world.outsider_agent.pk}")
    assert_error(response, 404, "not_found")
    assert str(world.outsider_agent.pk) not in response.content.decode()


def test_writes_by_the_outsider_leave_the_owner_untouched(world: World) -> None:
    """The destructive calls in one sequence, then the owner's view: agent, document and
    run are all still there, unchanged."""
    outsider, auth = world.outsider, _key_headers(world.outsider)
    with nothing_written(world.owner.tenant):
        for method, path in (
            ("PATCH", f"/api/v1/agents/{world.agent.pk}"),
            ("DELETE", f"/api/v1/agents/{world.agent.pk}/knowledge/{world.document.pk}"),
            ("DELETE", f"/api/v1/runs/{world.run_id}"),
            ("DELETE", f"/api/v1/agents/{world.agent.pk}"),
        ):
            response = outsider.client.generic(
                method,
                path,
                json.dumps({"config": SUPPORT_CONFIG}),
                "application/json",
                headers=auth,
            )
            assert response.status_code == 404, (method, path)
    assert world.owner.get(f"/api/v1/agents/{world.agent.pk}").json()["name"] == "acme-internal-bot"
    assert world.owner.get(f"/api/v1/runs/{world.run_id}").json()["status"] == "pending"


# --- issue 13.6: a tenant cannot make anyone a member of itself ------------------------------


def test_a_tenant_cannot_make_another_tenants_user_its_member(world: World) -> None:
    """The outsider's admin key names the owner's operator for the owner role: the same
    422 as a username that exists nowhere (no user id, no existence oracle), no membership
    anywhere, and the operator still cannot reach the outsider's tenant."""
    roles = "/api/v1/governance/roles"
    auth = _key_headers(world.outsider)
    with nothing_written(world.owner.tenant, world.outsider.tenant):
        answers = [
            world.outsider.client.post(
                roles,
                {"username": username, "role": "owner"},
                content_type="application/json",
                headers={"X-Correlation-ID": CORRELATION_ID, **auth},
            )
            for username in (world.member, "nobody-anywhere")
        ]
    for response in answers:
        body = assert_field_errors(response, "username")
        assert "user_id" not in body
    assert _normalised(answers[0]) == _normalised(answers[1])
    operator = get_user_model().objects.get(username=world.member)
    memberships = Membership.unscoped.filter(user=operator).values_list("tenant_id", flat=True)
    assert list(memberships) == [world.owner.tenant.pk]
    client = Client(raise_request_exception=False)
    client.force_login(operator)
    response = client.get("/api/v1/agents", headers={"X-Tenant": world.outsider.tenant.slug})
    assert_error(response, 404)


PERSONAL_ENDPOINTS = [e for e in ENDPOINTS if e.name in PERSONAL]


@pytest.mark.parametrize("endpoint", PERSONAL_ENDPOINTS, ids=str)
def test_personal_endpoints_refuse_keys_and_foreign_tokens(
    endpoint: Endpoint, world: World
) -> None:
    """Accepting an invitation: a tenant's key is refused (403) whatever the token; a
    signed-in outsider holding the owner's invitation token (addressed to someone else)
    gets the very bytes a made-up token gets, and joins nothing."""
    stranger = _non_staff_member(world.outsider.tenant)
    with nothing_written(world.owner.tenant, world.outsider.tenant):
        for token in (world.invitation_token, "t" * 43):
            by_key = call(
                world.outsider.client,
                endpoint,
                endpoint.path({}),
                _key_headers(world.outsider),
                body={"token": token},
            )
            assert_error(by_key, 403)
        if endpoint.method != "POST":
            return
        stolen = call(
            stranger, endpoint, endpoint.path({}), {}, body={"token": world.invitation_token}
        )
        made_up = call(stranger, endpoint, endpoint.path({}), {}, body={"token": "t" * 43})
    assert_error(stolen, 404, "not_found")
    _assert_nothing_of_the_owner(stolen, world)
    assert _normalised(stolen) == _normalised(made_up)
